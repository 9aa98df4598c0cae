package stdio

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"ssi/cluster/wire"
)

// The bug seen in CI. A move's destination holder writes the stdin it
// was handed to the process at once, and the process answers at once,
// but the holder's stream to the session is not up yet (its dial, the
// session's read barrier): the old holder dropped output it had no
// stream for, so the reply to that line never reached the caller.
func TestStdioReplyBeforeTheLinkIsUpReachesTheCaller(t *testing.T) {
	x := newStdioTest(t, nil)
	p := newProcPipes(t)
	f := startProc(t, p, true) // frozen: the line stays unread
	a := x.holder(p, nil, hooks{})
	a.Start()
	x.send(wire.FrStdin, "line 1\n")
	eventually(t, 2*time.Second, func() (bool, string) {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.in == 7, fmt.Sprintf("the holder has %d stdin bytes, want 7", a.in)
	})
	dialled := make(chan struct{})
	b := x.moveFrozen(f, a, false, hooks{dialled: dialled})
	f.mu.Unlock()
	// The process has answered; the stream is still being opened.
	eventually(t, 2*time.Second, func() (bool, string) {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.outLen == len("got line 1\n"), fmt.Sprintf("the holder keeps %d output bytes", b.outLen)
	})
	close(dialled)
	x.waitOut("got line 1\n", 2*time.Second)
}

// The race reproduced on a lab (a slow dial, as on a loaded CI machine):
// a holder's dial is still under way when the next move detaches it. The
// session took the stream as soon as the header came and sent the stdin
// it kept into it; the holder, detached meanwhile, dropped the stream,
// and that line was lost: its echo never came, and the test hung.
func TestStdioDetachWhileTheHolderDialsLosesNoInput(t *testing.T) {
	x := newStdioTest(t, nil)
	p := newProcPipes(t)
	f := startProc(t, p, false)
	a := x.holder(p, nil, hooks{})
	a.Start()
	x.send(wire.FrStdin, "line 1\n")
	x.waitOut("got line 1\n", 2*time.Second)

	dialled, started := make(chan struct{}), make(chan struct{})
	b := x.move(f, a, false, hooks{dialled: dialled, started: started})
	waitClosed(t, started, "the session side of the slow stream")
	x.send(wire.FrStdin, "line 2\n") // sent after the first move returned
	eventually(t, 2*time.Second, func() (bool, string) {
		x.s.mu.Lock()
		defer x.s.mu.Unlock()
		return x.s.inAt+uint64(len(x.s.in)) == 14, "the session has not got line 2"
	})
	// The next move detaches b while its dial is still under way.
	f.mu.Lock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := b.Detach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	close(dialled) // b sees it was detached and drops the stream
	x.land(f, b, st, hooks{})
	f.mu.Unlock()
	x.waitOut("got line 1\ngot line 2\n", 3*time.Second)
}

// A holder's stream that reaches the session late, after the next
// holder's (its session side waited for the read barrier), is refused:
// it must not take the input that now belongs to the newer holder.
func TestStdioLateStreamOfAnOldHolderIsRefused(t *testing.T) {
	x := newStdioTest(t, nil)
	p := newProcPipes(t)
	f := startProc(t, p, false)
	a := x.holder(p, nil, hooks{})
	a.Start()
	x.send(wire.FrStdin, "line 1\n")
	x.waitOut("got line 1\n", 2*time.Second)

	serve, started := make(chan struct{}), make(chan struct{})
	b := x.move(f, a, false, hooks{serve: serve, started: started})
	waitClosed(t, started, "the session side of the slow stream")
	// b's hello waits in the socket; b moves on before the session reads it.
	var dials atomic.Int32
	c := x.move(f, b, false, hooks{dials: &dials})
	x.send(wire.FrStdin, "line 2\n")
	x.waitOut("got line 1\ngot line 2\n", 2*time.Second)
	close(serve) // now the session reads b's hello
	eventually(t, 2*time.Second, func() (bool, string) {
		x.s.mu.Lock()
		defer x.s.mu.Unlock()
		return x.s.epoch == 3 && x.s.cur != nil, fmt.Sprintf("epoch %d", x.s.epoch)
	})
	x.send(wire.FrStdin, "line 3\n")
	x.waitOut("got line 1\ngot line 2\ngot line 3\n", 2*time.Second)
	// c's stream was never replaced by b's.
	c.mu.Lock()
	linked := c.link != nil
	c.mu.Unlock()
	if n := dials.Load(); n != 1 || !linked {
		t.Fatalf("the newest holder dialled %d times (linked %v), want once", n, linked)
	}
}

// Every byte reaches the process once and every answer the caller once,
// in order, while the process moves (some moves fail) and its streams
// break, under a steady flow of input; the exit comes last.
func TestStdioMovesUnderTrafficLoseAndRepeatNothing(t *testing.T) {
	x := newStdioTest(t, nil)
	p := newProcPipes(t)
	f := startProc(t, p, false)
	h := x.holder(p, nil, hooks{})
	h.Start()
	const lines = 400
	var want strings.Builder
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := 1; i <= lines; i++ {
			if x.caller.Send(wire.FrStdin, []byte(fmt.Sprintf("line %d\n", i))) != nil {
				return
			}
			if i%20 == 0 {
				time.Sleep(2 * time.Millisecond)
			}
		}
	}()
	for i := 1; i <= lines; i++ {
		fmt.Fprintf(&want, "got line %d\n", i)
	}
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 24; i++ {
		time.Sleep(time.Duration(rng.Intn(8)) * time.Millisecond)
		switch rng.Intn(4) {
		case 0:
			x.cut()
		case 1:
			h = x.move(f, h, true, hooks{})
		default:
			h = x.move(f, h, false, hooks{})
		}
	}
	waitClosed(t, sent, "the caller's input")
	x.send(wire.FrEOF, "")
	waitClosed(t, f.exited, "the process's exit")
	want.WriteString("bye\n")
	go h.Finish(7)
	x.waitOut(want.String(), 10*time.Second)
	x.waitExit(7, 5*time.Second)
}

// A move that fails after the detach leaves stdin as it was, even when
// the EOF was already given (the stdin pipe is closed on our side).
func TestStdioFailedMoveAfterEOFKeepsStdin(t *testing.T) {
	x := newStdioTest(t, nil)
	p := newProcPipes(t)
	f := startProc(t, p, true)
	h := x.holder(p, nil, hooks{})
	h.Start()
	x.send(wire.FrStdin, "abc\n")
	x.send(wire.FrEOF, "")
	eventually(t, 2*time.Second, func() (bool, string) {
		_, err := h.p.StdinW.Write(nil)
		return errors.Is(err, os.ErrClosed), "the holder has not closed the stdin pipe"
	})
	f.mu.Unlock()
	h = x.move(f, h, true, hooks{})
	waitClosed(t, f.exited, "the process's exit")
	go h.Finish(5)
	x.waitOut("got abc\nbye\n", 2*time.Second)
	x.waitExit(5, 3*time.Second)
}

// A signal sent while the process is between two holders is delivered
// once, by the next one.
func TestStdioSignalDuringAMoveOnce(t *testing.T) {
	got := make(chan os.Signal, 8)
	signal.Notify(got, syscall.SIGUSR1)
	defer signal.Stop(got)
	x := newStdioTest(t, nil)
	p := newProcPipes(t)
	f := startProc(t, p, false)
	h := x.holder(p, nil, hooks{})
	h.pid = os.Getpid
	h.Start()
	x.send(wire.FrSignal, string([]byte{byte(syscall.SIGUSR1)}))
	waitSignal(t, got)
	f.mu.Lock()
	st, err := h.Detach(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	x.send(wire.FrSignal, string([]byte{byte(syscall.SIGUSR1)}))
	x.land(f, h, st, hooks{})
	f.mu.Unlock()
	waitSignal(t, got)
	x.send(wire.FrStdin, "after\n") // the signal went before this line
	x.waitOut("got after\n", 2*time.Second)
	select {
	case s := <-got:
		t.Fatalf("a second %v", s)
	case <-time.After(200 * time.Millisecond):
	}
}
