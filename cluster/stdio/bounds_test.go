package stdio

import (
	"bytes"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ssi/cluster/wire"
)

// `yes | ssi run -- sleep 100`, then ^C: the caller pours stdin into a
// process that never reads it, and the signal still reaches the process
// at once (it used to wait behind the stdin the agent had no room for);
// the exit code comes back.
func TestStdioSignalGetsPastPouredInput(t *testing.T) {
	got := make(chan os.Signal, 8)
	signal.Notify(got, syscall.SIGUSR1)
	defer signal.Stop(got)
	x := openStdioTest(t, nil)
	p := newProcPipes(t) // no process reads its stdin
	h := x.holder(p, nil, hooks{})
	h.pid = os.Getpid
	h.Start()
	sigs := make(chan os.Signal, 1)
	yes := &pourer{}
	res := x.relay(yes, sigs)
	waitPoured(t, yes, maxIn)
	sigs <- syscall.SIGUSR1
	waitSignal(t, got)
	p.close()
	go h.Finish(130)
	waitRelay(t, res, 130)
}

// A caller that pours stdin into a process that does not read it (yet)
// sends only what its credit allows: the agent keeps maxIn at most,
// session and holder alike, however long it pours. Once the process
// reads, credit comes back and every byte gets through, then the exit.
func TestStdioInputIsBounded(t *testing.T) {
	x := openStdioTest(t, nil)
	p := newProcPipes(t)
	f := startProc(t, p, true) // frozen: reads nothing
	h := x.holder(p, nil, hooks{})
	h.Start()
	const total = 1 << 20
	in := &pourer{limit: total}
	res := x.relay(in, nil)
	poured := waitPoured(t, in, maxIn)
	for i := 0; i < 20; i++ {
		x.s.mu.Lock()
		kept := len(x.s.in)
		x.s.mu.Unlock()
		h.mu.Lock()
		queued := len(h.queue)
		h.mu.Unlock()
		if kept > maxIn || queued > maxIn {
			t.Fatalf("the session keeps %d stdin bytes, the holder %d; at most %d", kept, queued, maxIn)
		}
		time.Sleep(10 * time.Millisecond) // samples while the caller stands still
	}
	// What the caller sent is in the pipe (written), or kept.
	if pipe := pipeSize(t, p.inW); poured > int64(pipe+maxIn) {
		t.Fatalf("the caller sent %d bytes; the pipe holds %d, the credit allows %d more", poured, pipe, maxIn)
	}
	f.mu.Unlock()
	waitClosed(t, f.exited, "the process's exit")
	go h.Finish(0)
	waitRelay(t, res, 0)
	line := strings.Repeat("y", 63) + "\n"
	x.waitOut(strings.Repeat("got "+line, total/64)+"bye\n", 5*time.Second)
}

// A caller that ignores its credit (a stranger, a broken client) is cut
// off with an error once past it: the agent keeps no more than the
// credit and reads no more from it, and the process's stdin ends after
// what was kept, as when a caller leaves.
func TestStdioCallerPastItsCreditIsCutOff(t *testing.T) {
	x := newStdioTest(t, nil)
	p := newProcPipes(t)
	f := startProc(t, p, true) // frozen: reads nothing
	h := x.holder(p, nil, hooks{})
	h.Start()
	poured := make(chan struct{})
	go func() {
		defer close(poured)
		line := append(bytes.Repeat([]byte("y"), maxChunk-1), '\n')
		for x.caller.Send(wire.FrStdin, line) == nil {
		}
	}()
	waitClosed(t, x.hungUp, "the agent ending the caller's stream")
	waitClosed(t, poured, "the caller's sends failing")
	x.mu.Lock()
	errs := x.errs
	x.mu.Unlock()
	if len(errs) != 1 || !strings.Contains(errs[0], "credit") {
		t.Fatalf("the caller was told %q", errs)
	}
	x.s.mu.Lock()
	kept, client := len(x.s.in)+int(x.s.inAt), x.s.client
	x.s.mu.Unlock()
	h.mu.Lock()
	queued := len(h.queue)
	h.mu.Unlock()
	if kept > maxIn+pipeSize(t, p.inW) || queued > maxIn || client != nil {
		t.Fatalf("the session took %d stdin bytes, the holder keeps %d; caller still there: %v", kept, queued, client != nil)
	}
	f.mu.Unlock()
	waitClosed(t, f.exited, "the process's exit at the end of its stdin")
}

// Signals need no credit, but a flood of them that no holder takes keeps
// maxSigs at most; a raw caller gets its first credit unasked.
func TestStdioSignalsAreBounded(t *testing.T) {
	x := newStdioTest(t, nil)
	for i := 0; i < maxSigs+100; i++ {
		x.send(wire.FrSignal, "\x0a")
	}
	x.send(wire.FrEOF, "")
	eventually(t, 2*time.Second, func() (bool, string) {
		x.s.mu.Lock()
		defer x.s.mu.Unlock()
		return x.s.eof, "the session has not read the caller's EOF"
	})
	x.s.mu.Lock()
	kept, lost := len(x.s.sigs), x.s.sigLost
	x.s.mu.Unlock()
	if kept != maxSigs || lost != 100 {
		t.Fatalf("the session keeps %d signals and dropped %d; want %d and 100", kept, lost, maxSigs)
	}
	eventually(t, 2*time.Second, func() (bool, string) {
		x.mu.Lock()
		defer x.mu.Unlock()
		return x.credit == maxIn, fmt.Sprintf("the caller's credit is %d", x.credit)
	})
}

// pipeSize is the capacity of f's pipe.
func pipeSize(t *testing.T, f *os.File) int {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if cerr := rc.Control(func(fd uintptr) { n, err = unix.FcntlInt(fd, unix.F_GETPIPE_SZ, 0) }); cerr != nil || err != nil {
		t.Fatal(cerr, err)
	}
	return n
}
