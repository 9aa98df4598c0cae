package stdio

import (
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"ssi/cluster/jobns"
	"ssi/cluster/wire"
)

// A process that ended without a word from its holder (its node died)
// still ends the caller's wait, with its exit code where known.
func TestStdioLostProcessEndsTheCaller(t *testing.T) {
	code := 3
	x := newStdioTest(t, func() (bool, *int) { return false, &code })
	x.waitExit(3, 3*time.Second)
	x.mu.Lock()
	defer x.mu.Unlock()
	if !strings.Contains(x.stderr.String(), "ssi: process 42 ended") {
		t.Fatalf("stderr %q", x.stderr.String())
	}
}

// The process has left the agreed state (it ended), but its holder is
// still attached: the caller waits for the holder's word, not the
// watchdog's.
func TestStdioAttachedHolderOutlivesTheWatchdog(t *testing.T) {
	x := newStdioTest(t, func() (bool, *int) { return false, nil })
	p := newProcPipes(t)
	f := startProc(t, p, false)
	h := x.holder(p, nil, hooks{})
	h.Start()
	x.send(wire.FrStdin, "line 1\n")
	x.waitOut("got line 1\n", 2*time.Second)
	time.Sleep(3 * fastStdio.lostGrace)
	x.mu.Lock()
	exits := len(x.exits)
	x.mu.Unlock()
	if exits != 0 {
		t.Fatal("the session ended while its holder was attached")
	}
	x.send(wire.FrEOF, "")
	waitClosed(t, f.exited, "the process's exit")
	go h.Finish(4)
	x.waitExit(4, 3*time.Second)
}

// A process with a terminal: each window size the caller sends reaches
// the process's window size pipe as one record, a frame that is none is
// dropped, and after a move (whose fresh pipe lost whatever the old one
// held) the new holder is given the latest size again.
func TestStdioWindowSizeReachesEveryHolder(t *testing.T) {
	x := newStdioTest(t, nil)
	x.s.SetTTY(jobns.Winsize{Rows: 24, Cols: 80})
	p := newProcPipes(t).withWinsize(t)
	f := startProc(t, p, false)
	h := x.holder(p, nil, hooks{})
	h.Start()
	sizes := func(p *procPipes) <-chan jobns.Winsize {
		c := make(chan jobns.Winsize, 16)
		go func() {
			defer close(c)
			buf := make([]byte, jobns.WinsizeLen)
			for {
				if _, err := io.ReadFull(p.wsR, buf); err != nil {
					return
				}
				w, ok := jobns.ParseWinsize(buf)
				if !ok {
					t.Errorf("a record that is no window size: %v", buf)
				}
				c <- w
			}
		}()
		return c
	}
	want := func(c <-chan jobns.Winsize, w jobns.Winsize) {
		t.Helper()
		select {
		case got := <-c:
			if got != w {
				t.Fatalf("window size %+v, want %+v", got, w)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("no window size; want %+v", w)
		}
	}
	first := sizes(p)
	want(first, jobns.Winsize{Rows: 24, Cols: 80}) // the session's, given to every holder
	x.send(wire.FrWinsize, "short")
	x.send(wire.FrWinsize, string(jobns.Winsize{Rows: 0, Cols: 80}.Bytes()))
	x.send(wire.FrWinsize, string(jobns.Winsize{Rows: 33, Cols: 90, XPixel: 1, YPixel: 2}.Bytes()))
	want(first, jobns.Winsize{Rows: 33, Cols: 90, XPixel: 1, YPixel: 2})
	// A line still flows: the size frames took nothing from stdin.
	x.send(wire.FrStdin, "after resize\n")
	x.waitOut("got after resize\n", 2*time.Second)

	h = x.move(f, h, false, hooks{})
	second := sizes(f.p)
	want(second, jobns.Winsize{Rows: 33, Cols: 90, XPixel: 1, YPixel: 2})
	x.send(wire.FrWinsize, string(jobns.Winsize{Rows: 50, Cols: 132}.Bytes()))
	want(second, jobns.Winsize{Rows: 50, Cols: 132})
	select {
	case w, ok := <-second:
		if ok {
			t.Fatalf("a size more: %+v", w)
		}
	case <-time.After(200 * time.Millisecond):
	}
}

// The caller of a process with a terminal hangs up (killed, its
// connection lost): the process gets SIGHUP, as from a terminal that
// goes away. A process without one only sees its stdin end.
func TestStdioTerminalHangUpSendsSIGHUP(t *testing.T) {
	got := make(chan os.Signal, 8)
	signal.Notify(got, syscall.SIGHUP)
	defer signal.Stop(got)
	for _, tty := range []bool{false, true} {
		x := newStdioTest(t, nil)
		if tty {
			x.s.SetTTY(jobns.DefaultWinsize)
		}
		p := newProcPipes(t)
		if tty {
			p.withWinsize(t)
		}
		startProc(t, p, false)
		h := x.holder(p, nil, hooks{})
		h.pid = os.Getpid
		h.Start()
		x.send(wire.FrStdin, "hello\n")
		x.waitOut("got hello\n", 2*time.Second)
		x.callerConn.Close()
		select {
		case <-got:
			if !tty {
				t.Fatal("SIGHUP for a process without a terminal")
			}
		case <-time.After(time.Second):
			if tty {
				t.Fatal("no SIGHUP after the caller of a terminal hung up")
			}
		}
	}
}
