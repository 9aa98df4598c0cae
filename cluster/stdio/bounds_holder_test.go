package stdio

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"ssi/cluster/wire"
)

// A session that sends stdin past what its caller's credit allows (a
// broken or hostile peer) cannot make a holder keep more than maxIn: the
// holder takes what fits, ends the stream, and the next stream's hello
// says where it stands, so that nothing is lost or repeated.
func TestStdioHolderRefusesInputPastItsBound(t *testing.T) {
	p := newProcPipes(t) // nobody reads the process's stdin
	h := bareHolder(t, p, nil)
	hellos := make(chan helloMsg, 16)
	h.connect = func(context.Context) (net.Conn, error) {
		mine, theirs := socketPair(t)
		go func() {
			defer theirs.Close()
			fc := wire.NewConn(theirs)
			var hello helloMsg
			if fc.Expect(wire.FrHeader, &hello) != nil {
				return
			}
			select {
			case hellos <- hello:
			default: // the test has what it needs
			}
			if fc.SendJSON(wire.FrHeader, helloMsg{In: hello.In, Sig: hello.Sig}) != nil {
				return
			}
			chunk := bytes.Repeat([]byte("z"), maxChunk)
			for at := hello.In; fc.Send(wire.FrStdin, wire.WithAt(at, chunk)) == nil; at += maxChunk {
			}
		}()
		return mine, nil
	}
	h.Start()
	first := <-hellos
	var second helloMsg
	select {
	case second = <-hellos:
	case <-time.After(5 * time.Second):
		t.Fatal("the holder kept the stream of a session that sent past its bound")
	}
	h.mu.Lock()
	queued, in := len(h.queue), h.in
	h.mu.Unlock()
	pipe := uint64(pipeSize(t, p.inW))
	if first.In != 0 || queued > maxIn || second.In > maxIn+pipe || in < second.In {
		t.Fatalf("hellos at %d then %d; the holder has %d (queue %d, bound %d, pipe %d)",
			first.In, second.In, in, queued, maxIn, pipe)
	}
	// What the holder took went on: the process's pipe, then the queue.
	if second.In < pipe {
		t.Fatalf("the holder took only %d bytes; its pipe holds %d", second.In, pipe)
	}
}

// A process that writes faster than its caller reads is held back as a
// terminal would hold it: the holder keeps at most maxOut (plus the
// chunk a pump read), the process blocks on its writes, and once the
// caller reads again every byte arrives, in order, then the exit.
func TestStdioOutputIsBoundedAndBlocksTheProcess(t *testing.T) {
	x := openStdioTest(t, nil) // the caller reads nothing for now
	p := newProcPipes(t)
	h := x.holder(p, nil, hooks{})
	h.Start()
	const total = 4 << 20
	want := make([]byte, total)
	for i := range want {
		want[i] = byte('a' + i%26)
	}
	var written atomic.Int64
	go func() {
		for off := 0; off < total; off += maxChunk {
			n, err := p.outW.Write(want[off:min(off+maxChunk, total)])
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
		p.close()
	}()
	// The process stops: its writes block once the pipe, the holder, the
	// stream and the caller's socket are full.
	last, since := int64(-1), time.Now()
	eventually(t, 10*time.Second, func() (bool, string) {
		n := written.Load()
		if n != last {
			last, since = n, time.Now()
		}
		h.mu.Lock()
		kept := h.outLen
		h.mu.Unlock()
		if kept > maxOut+maxChunk {
			t.Fatalf("the holder keeps %d output bytes; at most %d", kept, maxOut+maxChunk)
		}
		return time.Since(since) >= 300*time.Millisecond, fmt.Sprintf("the process has written %d bytes and goes on", n)
	})
	if last >= total/2 {
		t.Fatalf("the process wrote %d of %d bytes with nobody reading", last, total)
	}
	h.mu.Lock()
	kept := h.outLen
	h.mu.Unlock()
	if kept > maxOut+maxChunk {
		t.Fatalf("the holder keeps %d output bytes; at most %d", kept, maxOut+maxChunk)
	}
	go x.readCaller()
	x.waitOut(string(want), 20*time.Second)
	go h.Finish(3)
	x.waitExit(3, 5*time.Second)
}
