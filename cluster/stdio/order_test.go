package stdio

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"ssi/cluster/wire"
)

// The exit reaches the caller after all the output, even when much of it
// waits in the holder for a stream.
func TestStdioExitComesAfterAllOutput(t *testing.T) {
	x := newStdioTest(t, nil)
	p := newProcPipes(t)
	dialled := make(chan struct{})
	h := x.holder(p, nil, hooks{dialled: dialled})
	h.Start()
	want := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16)
	go func() {
		_, _ = p.outW.Write(want)
		p.close()
	}()
	eventually(t, 2*time.Second, func() (bool, string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.outLen == len(want), fmt.Sprintf("the holder keeps %d output bytes", h.outLen)
	})
	go h.Finish(9)
	close(dialled)
	x.waitExit(9, 5*time.Second)
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.atExit != len(want) || !bytes.Equal(x.stdout.Bytes(), want) {
		t.Fatalf("the exit came after %d output bytes; %d in all, want %d", x.atExit, x.stdout.Len(), len(want))
	}
}

// The session may see an old stream's last output after the next
// stream arrived (a failed move's resume: same holder, new stream; or the
// next holder's), and the next holder, told by an acknowledgement that
// the session has that output, goes on from there. Output is placed by
// its offset, not by how much came on the stream: counted per stream,
// the new stream's bytes would be taken for the ones already passed on,
// and lost. What comes twice is passed on once.
func TestStdioOutputIsPlacedByOffset(t *testing.T) {
	x := newStdioTest(t, nil)
	old, now := &sstream{wake: make(chan struct{}, 1)}, &sstream{wake: make(chan struct{}, 1)}
	a, b := strings.Repeat("A", 100), strings.Repeat("B", 100)
	x.s.relayOut(old, wire.FrStdout, wire.WithAt(0, []byte(a)))
	x.s.relayOut(now, wire.FrStdout, wire.WithAt(100, []byte(b)))
	x.s.relayOut(old, wire.FrStdout, wire.WithAt(50, []byte(a[50:]+b[:20])))
	x.s.relayOut(now, wire.FrStderr, wire.WithAt(150, []byte(b[50:]+"C")))
	x.waitOut(a+b, 2*time.Second)
	eventually(t, 2*time.Second, func() (bool, string) {
		x.mu.Lock()
		defer x.mu.Unlock()
		return x.stderr.String() == "C", fmt.Sprintf("stderr %q", x.stderr.String())
	})
}

// Likewise, stdin the session sends again reaches the process once.
func TestStdioInputIsPlacedByOffset(t *testing.T) {
	p := newProcPipes(t)
	h := bareHolder(t, p, nil)
	h.connect = func(context.Context) (net.Conn, error) {
		mine, theirs := socketPair(t)
		go func() {
			fc := wire.NewConn(theirs)
			var hello helloMsg
			if fc.Expect(wire.FrHeader, &hello) != nil {
				return
			}
			_ = fc.SendJSON(wire.FrHeader, helloMsg{In: hello.In, Sig: hello.Sig})
			_ = fc.Send(wire.FrStdin, wire.WithAt(0, []byte("abc\n")))
			_ = fc.Send(wire.FrStdin, wire.WithAt(0, []byte("abc\ndef\n")))
			_ = fc.Send(wire.FrEOF, nil)
		}()
		return mine, nil
	}
	h.Start()
	f := startProc(t, p, false)
	waitClosed(t, f.exited, "the process's exit")
	want := "got abc\ngot def\nbye\n"
	eventually(t, 2*time.Second, func() (bool, string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		var got []byte
		for _, c := range h.out {
			got = append(got, c.B...)
		}
		return string(got) == want, fmt.Sprintf("the process answered %q, want %q", got, want)
	})
}

// A detach waits for no peer: a session that has stopped reading does not
// keep the process frozen, and what was not acknowledged travels on.
func TestStdioDetachDoesNotWaitForAStalledSession(t *testing.T) {
	p := newProcPipes(t)
	f := startProc(t, p, false)
	h := bareHolder(t, p, nil)
	h.tm = quietStdio
	stalled := make(chan struct{})
	t.Cleanup(func() { close(stalled) })
	h.connect = func(context.Context) (net.Conn, error) {
		mine, theirs := socketPair(t)
		go func() {
			defer theirs.Close()
			fc := wire.NewConn(theirs)
			var hello helloMsg
			if fc.Expect(wire.FrHeader, &hello) != nil {
				return
			}
			// Took the stream, sends one line, then neither reads nor writes.
			_ = fc.SendJSON(wire.FrHeader, helloMsg{In: hello.In, Sig: hello.Sig})
			_ = fc.Send(wire.FrStdin, wire.WithAt(0, []byte("x\n")))
			<-stalled
		}()
		return mine, nil
	}
	h.Start()
	eventually(t, 2*time.Second, func() (bool, string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.outLen == len("got x\n"), fmt.Sprintf("%d output bytes", h.outLen)
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	t0 := time.Now()
	st, err := h.Detach(context.Background())
	if err != nil || time.Since(t0) > 500*time.Millisecond {
		t.Fatalf("detach: %v after %v", err, time.Since(t0))
	}
	var out []byte
	for _, c := range st.Out {
		out = append(out, c.B...)
	}
	if st.In != 2 || len(st.Pending) != 0 || st.OutAt != 0 || string(out) != "got x\n" {
		t.Fatalf("state %+v, output %q", st, out)
	}
}

// A stream that goes quiet is given up on both sides, and the holder
// reaches the session again.
func TestStdioQuietStreamsEnd(t *testing.T) {
	p := newProcPipes(t)
	h := bareHolder(t, p, nil)
	h.tm = quietStdio
	stalled := make(chan struct{})
	t.Cleanup(func() { close(stalled) })
	dials := make(chan struct{}, 16)
	h.connect = func(context.Context) (net.Conn, error) {
		dials <- struct{}{}
		mine, theirs := socketPair(t)
		go func() {
			defer theirs.Close()
			fc := wire.NewConn(theirs)
			var hello helloMsg
			if fc.Expect(wire.FrHeader, &hello) == nil {
				_ = fc.SendJSON(wire.FrHeader, helloMsg{In: hello.In, Sig: hello.Sig})
			}
			<-stalled // and never a keepalive
		}()
		return mine, nil
	}
	h.Start()
	for i := 0; i < 2; i++ {
		select {
		case <-dials:
		case <-time.After(3 * time.Second):
			t.Fatalf("the holder dialled %d times; a quiet stream must end within %v", i, quietStdio.idle)
		}
	}

	x := openStdioTestTiming(t, nil, quietStdio)
	go x.readCaller()
	mine, theirs := socketPair(t)
	served := make(chan struct{})
	go func() {
		defer close(served)
		x.s.ServeHolder(wire.NewConn(theirs))
	}()
	fc := wire.NewConn(mine)
	if err := fc.SendJSON(wire.FrHeader, helloMsg{Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	// A holder that says hello and then nothing, ever.
	waitClosed(t, served, "the session giving up a quiet holder")
}
