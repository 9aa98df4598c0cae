package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ssi/cluster/jobns"
	"ssi/cluster/wire"
)

// These tests drive a session and its holders as the agents do, over
// socketpairs (buffered like TCP), with a fake process that echoes its
// stdin lines and can be frozen and "restored" onto new pipes, as CRIU
// does. Every wait has a deadline.

// fastStdio is stdioTiming for tests: dead streams show within a second.
var fastStdio = stdioTiming{
	keepalive: 50 * time.Millisecond, idle: 500 * time.Millisecond, dial: time.Second,
	backoff: 100 * time.Millisecond, orphan: time.Second, exitWait: 2 * time.Second,
	stop: time.Second, watch: 50 * time.Millisecond, lostGrace: 300 * time.Millisecond,
}

const testCPID = 42

// stdioTest is one attached process: the session, the caller's end, and
// how holders reach the session.
type stdioTest struct {
	t *testing.T
	a *Agent
	s *session

	caller     *wire.Conn    // what `ssi run` holds
	callerConn net.Conn      // caller's
	hungUp     chan struct{} // readCaller: closed once the caller's stream ended

	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
	exits  []int
	atExit int        // stdout bytes when the exit came
	links  []net.Conn // the session's ends of holder streams
	credit uint64     // readCaller: the largest credit granted
	errs   []string   // readCaller: wire.FrError texts
}

// newStdioTest is openStdioTest with a caller that ignores its credit:
// readCaller reads the stream, the test sends on x.caller itself.
func newStdioTest(t *testing.T, check func() (bool, *int)) *stdioTest {
	x := openStdioTest(t, check)
	go x.readCaller()
	return x
}

// openStdioTest is a session and the caller's end of its stream, which
// nobody reads yet (readCaller or relay).
func openStdioTest(t *testing.T, check func() (bool, *int)) *stdioTest {
	x := &stdioTest{t: t, a: &Agent{log: testLogger(t), sessions: map[int]*session{}}, hungUp: make(chan struct{})}
	if check == nil {
		check = func() (bool, *int) { return true, nil }
	}
	mine, theirs := socketPair(t)
	agentEnd := wire.NewConn(theirs)
	x.s = x.a.openSession(testCPID, agentEnd, fastStdio, check)
	go x.s.fromClient(agentEnd)
	x.caller, x.callerConn = wire.NewConn(mine), mine
	t.Cleanup(func() { x.s.end([]byte(`{"code":-1}`)) })
	return x
}

// readCaller is a raw caller's loop: output, credit, errors and the
// exit, as they come.
func (x *stdioTest) readCaller() {
	defer close(x.hungUp)
	for {
		typ, b, err := x.caller.Recv()
		if err != nil {
			return
		}
		x.mu.Lock()
		switch typ {
		case wire.FrStdout:
			x.stdout.Write(b)
		case wire.FrStderr:
			x.stderr.Write(b)
		case wire.FrCredit:
			if n, ok := wire.ParseCredit(b); ok {
				x.credit = max(x.credit, n)
			}
		case wire.FrError:
			x.errs = append(x.errs, string(b))
		case wire.FrExit:
			var e wire.ExitInfo
			_ = json.Unmarshal(b, &e)
			x.exits = append(x.exits, e.Code)
			x.atExit = x.stdout.Len()
		}
		x.mu.Unlock()
	}
}

// relayResult is what Relay returned.
type relayResult struct {
	code int
	err  error
}

// relay runs `ssi run`'s Relay on the caller's end, with stdin from in
// and signals from sigs (nil: none); output goes to x.stdout and
// x.stderr.
func (x *stdioTest) relay(in io.Reader, sigs chan os.Signal) <-chan relayResult {
	if sigs == nil {
		sigs = make(chan os.Signal)
		x.t.Cleanup(func() { close(sigs) })
	}
	at := &Attached{CPID: testCPID, conn: x.callerConn, fc: x.caller}
	res := make(chan relayResult, 1)
	go func() {
		code, err := at.Relay(in, lockedWriter{x, &x.stdout}, lockedWriter{x, &x.stderr}, sigs)
		res <- relayResult{code, err}
	}()
	return res
}

// lockedWriter writes into one of x's buffers.
type lockedWriter struct {
	x *stdioTest
	b *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.x.mu.Lock()
	defer w.x.mu.Unlock()
	return w.b.Write(p)
}

// waitRelay waits for Relay to return the exit code want.
func waitRelay(t *testing.T, res <-chan relayResult, want int) {
	t.Helper()
	select {
	case r := <-res:
		if r.err != nil || r.code != want {
			t.Fatalf("Relay returned %d, %v; want %d", r.code, r.err, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Relay has not returned")
	}
}

// pourer is stdin like `yes`'s: lines of 64 bytes, for ever or up to
// limit bytes. It counts what it gave.
type pourer struct {
	n     atomic.Int64
	limit int64 // 0: none
}

func (p *pourer) Read(b []byte) (int, error) {
	at := p.n.Load()
	if p.limit > 0 {
		if at >= p.limit {
			return 0, io.EOF
		}
		b = b[:min(int64(len(b)), p.limit-at)]
	}
	for i := range b {
		b[i] = 'y'
		if (at+int64(i))%64 == 63 {
			b[i] = '\n'
		}
	}
	p.n.Add(int64(len(b)))
	return len(b), nil
}

// waitPoured waits until the caller has read at least least bytes of
// its stdin and then no more for a while: it has sent all it may. It
// returns how much that is.
func waitPoured(t *testing.T, p *pourer, least int64) int64 {
	t.Helper()
	last, since := int64(-1), time.Now()
	eventually(t, 5*time.Second, func() (bool, string) {
		n := p.n.Load()
		if n != last {
			last, since = n, time.Now()
		}
		return n >= least && time.Since(since) >= 200*time.Millisecond,
			fmt.Sprintf("the caller has read %d bytes of stdin, and goes on", n)
	})
	return last
}

func (x *stdioTest) send(typ wire.Frame, b string) {
	x.t.Helper()
	if err := x.caller.Send(typ, []byte(b)); err != nil {
		x.t.Fatalf("the caller's send: %v", err)
	}
}

// waitOut waits until the caller's stdout is exactly want.
func (x *stdioTest) waitOut(want string, d time.Duration) {
	x.t.Helper()
	eventually(x.t, d, func() (bool, string) {
		x.mu.Lock()
		defer x.mu.Unlock()
		got := x.stdout.String()
		if len(got) > len(want) || !strings.HasPrefix(want, got) {
			x.t.Fatalf("caller's stdout %q, want %q", got, want)
		}
		return got == want, fmt.Sprintf("caller's stdout %q, want %q", got, want)
	})
}

// waitExit waits for the one exit the caller must get.
func (x *stdioTest) waitExit(want int, d time.Duration) {
	x.t.Helper()
	eventually(x.t, d, func() (bool, string) {
		x.mu.Lock()
		defer x.mu.Unlock()
		return len(x.exits) > 0, fmt.Sprintf("no exit; stdout %q stderr %q", x.stdout.String(), x.stderr.String())
	})
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.exits) != 1 || x.exits[0] != want {
		x.t.Fatalf("exits %v, want [%d]", x.exits, want)
	}
}

// hooks shape one stream from a holder to the session.
type hooks struct {
	dialled <-chan struct{} // the holder's dial returns only once this is closed
	serve   <-chan struct{} // the session serves the stream only once this is closed
	started chan<- struct{} // closed once the session side has the stream
	dials   *atomic.Int32   // counts the holder's dials
}

// connect is what dial is for a holder: a stream to the session through
// a fake migration port.
func (x *stdioTest) connect(hk hooks) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		if hk.dials != nil {
			hk.dials.Add(1)
		}
		mine, theirs := socketPair(x.t)
		x.mu.Lock()
		x.links = append(x.links, theirs)
		x.mu.Unlock()
		go func() {
			defer theirs.Close()
			fc := wire.NewConn(theirs)
			var hdr wire.StreamHeader
			if err := fc.Expect(wire.FrHeader, &hdr); err != nil || hdr.Kind != "stdio" || hdr.CPID != testCPID {
				return
			}
			if hk.started != nil {
				close(hk.started)
			}
			if hk.serve != nil {
				<-hk.serve
			}
			x.s.serveHolder(fc)
		}()
		if err := wire.NewConn(mine).SendJSON(wire.FrHeader, wire.StreamHeader{Kind: "stdio", CPID: testCPID}); err != nil {
			mine.Close()
			return nil, err
		}
		if hk.dialled != nil {
			select {
			case <-hk.dialled:
			case <-ctx.Done():
				mine.Close()
				return nil, ctx.Err()
			}
		}
		return mine, nil
	}
}

// cut breaks every holder stream the session has now.
func (x *stdioTest) cut() {
	x.mu.Lock()
	links := x.links
	x.links = nil
	x.mu.Unlock()
	for _, c := range links {
		c.Close()
	}
}

// holder makes a holder for p's pipes, as handleRun or landed would.
func (x *stdioTest) holder(p *pipes, st *stdioState, hk hooks) *holder {
	h := x.a.newHolder(testCPID, "home", pipeEnds{p.inW, p.inR, p.outR, p.errR, p.wsW}, st)
	h.tm = fastStdio
	h.pid = func() int { return 0 }
	h.connect = x.connect(hk)
	x.t.Cleanup(h.close)
	return h
}

// pipes are one node's stdio pipes of the process: the holder's ends
// (inW, inR, outR, errR, and wsW for a process with a terminal) and the
// process's (in, outW, errW, wsR).
type pipes struct {
	inR, inW, outR, outW, errR, errW *os.File
	wsR, wsW                         *os.File // nil: no terminal
	in                               int      // the process's stdin: a second descriptor of inR
	once                             sync.Once
}

// withWinsize gives p the window size pipe of a process with a terminal.
func (p *pipes) withWinsize(t *testing.T) *pipes {
	t.Helper()
	var err error
	if p.wsR, p.wsW, err = os.Pipe(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.wsR.Close() })
	return p
}

func newPipes(t *testing.T) *pipes {
	t.Helper()
	var p pipes
	var err error
	for _, pair := range [][2]**os.File{{&p.inR, &p.inW}, {&p.outR, &p.outW}, {&p.errR, &p.errW}} {
		if *pair[0], *pair[1], err = os.Pipe(); err != nil {
			t.Fatal(err)
		}
	}
	// Not Fd(): that would make the pipe blocking.
	rc, err := p.inR.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) { p.in, err = unix.Dup(int(fd)) })
	}
	if err != nil {
		t.Fatal(err)
	}
	return &p
}

// fakeProc echoes each stdin line as "got LINE", says "bye" at EOF and
// exits. Holding mu freezes it between two reads, as CRIU's freeze does.
type fakeProc struct {
	mu     sync.Mutex
	p      *pipes
	line   []byte
	exited chan struct{}
}

func startProc(t *testing.T, p *pipes, frozen bool) *fakeProc {
	f := &fakeProc{p: p, exited: make(chan struct{})}
	if frozen {
		f.mu.Lock()
	}
	go f.run()
	t.Cleanup(func() {
		locked := f.mu.TryLock()
		f.p.close()
		if locked {
			f.mu.Unlock()
		}
	})
	return f
}

func (f *fakeProc) run() {
	defer close(f.exited)
	buf := make([]byte, 4096)
	for {
		f.mu.Lock()
		n, err := unix.Read(f.p.in, buf)
		if n > 0 {
			f.line = append(f.line, buf[:n]...)
			for {
				i := bytes.IndexByte(f.line, '\n')
				if i < 0 {
					break
				}
				_, _ = f.p.outW.Write([]byte("got " + string(f.line[:i+1])))
				f.line = f.line[i+1:]
			}
		}
		if n == 0 && err == nil || err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
			_, _ = f.p.outW.Write([]byte("bye\n"))
			f.p.outW.Close()
			f.p.errW.Close()
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
		if n <= 0 {
			time.Sleep(200 * time.Microsecond)
		}
	}
}

// close closes the process's ends, as its death does.
func (p *pipes) close() {
	p.once.Do(func() {
		unix.Close(p.in)
		p.outW.Close()
		p.errW.Close()
	})
}

// move moves f from holder h to a new holder on new pipes, as a
// migration does: freeze, detach, restore, start, resume, close the
// source. With fail, the move fails after the detach and h resumes.
func (x *stdioTest) move(f *fakeProc, h *holder, fail bool, hk hooks) *holder {
	x.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	return x.moveFrozen(f, h, fail, hk)
}

// moveFrozen is move for a process the caller has frozen.
func (x *stdioTest) moveFrozen(f *fakeProc, h *holder, fail bool, hk hooks) *holder {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t0 := time.Now()
	st, err := h.detach(ctx)
	if err != nil {
		x.t.Fatalf("detach: %v", err)
	}
	if d := time.Since(t0); d > time.Second {
		x.t.Fatalf("detach took %v", d)
	}
	if fail {
		h.resume(st)
		return h
	}
	// st travels as JSON, as in wire.FrPending.
	b, err := json.Marshal(st)
	if err != nil {
		x.t.Fatal(err)
	}
	var there stdioState
	if err := json.Unmarshal(b, &there); err != nil {
		x.t.Fatal(err)
	}
	return x.land(f, h, &there, hk)
}

// land restores f, frozen and detached from h with st, onto new pipes
// under a new holder (the same process: the same pid), starts it and
// closes h, as a destination and then the source do.
func (x *stdioTest) land(f *fakeProc, h *holder, st *stdioState, hk hooks) *holder {
	x.t.Helper()
	p := newPipes(x.t)
	if f.p.wsR != nil {
		p.withWinsize(x.t)
	}
	nh := x.holder(p, st, hk)
	nh.pid = h.pid
	old := f.p
	f.p = p
	old.close()
	nh.start()
	h.close()
	return nh
}

// The bug seen in CI. A move's destination holder writes the stdin it
// was handed to the process at once, and the process answers at once,
// but the holder's stream to the session is not up yet (its dial, the
// session's read barrier): the old holder dropped output it had no
// stream for, so the reply to that line never reached the caller.
func TestStdioReplyBeforeTheLinkIsUpReachesTheCaller(t *testing.T) {
	x := newStdioTest(t, nil)
	p := newPipes(t)
	f := startProc(t, p, true) // frozen: the line stays unread
	a := x.holder(p, nil, hooks{})
	a.start()
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
	p := newPipes(t)
	f := startProc(t, p, false)
	a := x.holder(p, nil, hooks{})
	a.start()
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
	st, err := b.detach(ctx)
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
	p := newPipes(t)
	f := startProc(t, p, false)
	a := x.holder(p, nil, hooks{})
	a.start()
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
	p := newPipes(t)
	f := startProc(t, p, false)
	h := x.holder(p, nil, hooks{})
	h.start()
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
	go h.finish(7)
	x.waitOut(want.String(), 10*time.Second)
	x.waitExit(7, 5*time.Second)
}

// The exit reaches the caller after all the output, even when much of it
// waits in the holder for a stream.
func TestStdioExitComesAfterAllOutput(t *testing.T) {
	x := newStdioTest(t, nil)
	p := newPipes(t)
	dialled := make(chan struct{})
	h := x.holder(p, nil, hooks{dialled: dialled})
	h.start()
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
	go h.finish(9)
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
	a := &Agent{log: testLogger(t), sessions: map[int]*session{}}
	p := newPipes(t)
	h := a.newHolder(testCPID, "home", pipeEnds{p.inW, p.inR, p.outR, p.errR}, nil)
	h.tm, h.pid = fastStdio, func() int { return 0 }
	t.Cleanup(h.close)
	h.connect = func(context.Context) (net.Conn, error) {
		mine, theirs := socketPair(t)
		go func() {
			fc := wire.NewConn(theirs)
			var hello stdioHello
			if fc.Expect(wire.FrHeader, &hello) != nil {
				return
			}
			_ = fc.SendJSON(wire.FrHeader, stdioHello{In: hello.In, Sig: hello.Sig})
			_ = fc.Send(wire.FrStdin, wire.WithAt(0, []byte("abc\n")))
			_ = fc.Send(wire.FrStdin, wire.WithAt(0, []byte("abc\ndef\n")))
			_ = fc.Send(wire.FrEOF, nil)
		}()
		return mine, nil
	}
	h.start()
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
	a := &Agent{log: testLogger(t), sessions: map[int]*session{}}
	p := newPipes(t)
	f := startProc(t, p, false)
	h := a.newHolder(testCPID, "home", pipeEnds{p.inW, p.inR, p.outR, p.errR}, nil)
	h.tm, h.pid = fastStdio, func() int { return 0 }
	t.Cleanup(h.close)
	stalled := make(chan struct{})
	t.Cleanup(func() { close(stalled) })
	h.connect = func(context.Context) (net.Conn, error) {
		mine, theirs := socketPair(t)
		go func() {
			defer theirs.Close()
			fc := wire.NewConn(theirs)
			var hello stdioHello
			if fc.Expect(wire.FrHeader, &hello) != nil {
				return
			}
			// Took the stream, sends one line, then neither reads nor writes.
			_ = fc.SendJSON(wire.FrHeader, stdioHello{In: hello.In, Sig: hello.Sig})
			_ = fc.Send(wire.FrStdin, wire.WithAt(0, []byte("x\n")))
			<-stalled
		}()
		return mine, nil
	}
	h.start()
	eventually(t, 2*time.Second, func() (bool, string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.outLen == len("got x\n"), fmt.Sprintf("%d output bytes", h.outLen)
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	t0 := time.Now()
	st, err := h.detach(context.Background())
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

// `yes | ssi run -- sleep 100`, then ^C: the caller pours stdin into a
// process that never reads it, and the signal still reaches the process
// at once (it used to wait behind the stdin the agent had no room for);
// the exit code comes back.
func TestStdioSignalGetsPastPouredInput(t *testing.T) {
	got := make(chan os.Signal, 8)
	signal.Notify(got, syscall.SIGUSR1)
	defer signal.Stop(got)
	x := openStdioTest(t, nil)
	p := newPipes(t) // no process reads its stdin
	h := x.holder(p, nil, hooks{})
	h.pid = os.Getpid
	h.start()
	sigs := make(chan os.Signal, 1)
	yes := &pourer{}
	res := x.relay(yes, sigs)
	waitPoured(t, yes, stdioMaxIn)
	sigs <- syscall.SIGUSR1
	waitSignal(t, got)
	p.close()
	go h.finish(130)
	waitRelay(t, res, 130)
}

// A caller that pours stdin into a process that does not read it (yet)
// sends only what its credit allows: the agent keeps stdioMaxIn at most,
// session and holder alike, however long it pours. Once the process
// reads, credit comes back and every byte gets through, then the exit.
func TestStdioInputIsBounded(t *testing.T) {
	x := openStdioTest(t, nil)
	p := newPipes(t)
	f := startProc(t, p, true) // frozen: reads nothing
	h := x.holder(p, nil, hooks{})
	h.start()
	const total = 1 << 20
	in := &pourer{limit: total}
	res := x.relay(in, nil)
	poured := waitPoured(t, in, stdioMaxIn)
	for i := 0; i < 20; i++ {
		x.s.mu.Lock()
		kept := len(x.s.in)
		x.s.mu.Unlock()
		h.mu.Lock()
		queued := len(h.queue)
		h.mu.Unlock()
		if kept > stdioMaxIn || queued > stdioMaxIn {
			t.Fatalf("the session keeps %d stdin bytes, the holder %d; at most %d", kept, queued, stdioMaxIn)
		}
		time.Sleep(10 * time.Millisecond) // samples while the caller stands still
	}
	// What the caller sent is in the pipe (written), or kept.
	if pipe := pipeSize(t, p.inW); poured > int64(pipe+stdioMaxIn) {
		t.Fatalf("the caller sent %d bytes; the pipe holds %d, the credit allows %d more", poured, pipe, stdioMaxIn)
	}
	f.mu.Unlock()
	waitClosed(t, f.exited, "the process's exit")
	go h.finish(0)
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
	p := newPipes(t)
	f := startProc(t, p, true) // frozen: reads nothing
	h := x.holder(p, nil, hooks{})
	h.start()
	poured := make(chan struct{})
	go func() {
		defer close(poured)
		line := append(bytes.Repeat([]byte("y"), stdioChunk-1), '\n')
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
	if kept > stdioMaxIn+pipeSize(t, p.inW) || queued > stdioMaxIn || client != nil {
		t.Fatalf("the session took %d stdin bytes, the holder keeps %d; caller still there: %v", kept, queued, client != nil)
	}
	f.mu.Unlock()
	waitClosed(t, f.exited, "the process's exit at the end of its stdin")
}

// Signals need no credit, but a flood of them that no holder takes keeps
// stdioMaxSigs at most; a raw caller gets its first credit unasked.
func TestStdioSignalsAreBounded(t *testing.T) {
	x := newStdioTest(t, nil)
	for i := 0; i < stdioMaxSigs+100; i++ {
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
	if kept != stdioMaxSigs || lost != 100 {
		t.Fatalf("the session keeps %d signals and dropped %d; want %d and 100", kept, lost, stdioMaxSigs)
	}
	eventually(t, 2*time.Second, func() (bool, string) {
		x.mu.Lock()
		defer x.mu.Unlock()
		return x.credit == stdioMaxIn, fmt.Sprintf("the caller's credit is %d", x.credit)
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

// A stream that goes quiet is given up on both sides, and the holder
// reaches the session again.
func TestStdioQuietStreamsEnd(t *testing.T) {
	a := &Agent{log: testLogger(t), sessions: map[int]*session{}}
	p := newPipes(t)
	h := a.newHolder(testCPID, "home", pipeEnds{p.inW, p.inR, p.outR, p.errR}, nil)
	h.tm, h.pid = fastStdio, func() int { return 0 }
	t.Cleanup(h.close)
	stalled := make(chan struct{})
	t.Cleanup(func() { close(stalled) })
	dials := make(chan struct{}, 16)
	h.connect = func(context.Context) (net.Conn, error) {
		dials <- struct{}{}
		mine, theirs := socketPair(t)
		go func() {
			defer theirs.Close()
			fc := wire.NewConn(theirs)
			var hello stdioHello
			if fc.Expect(wire.FrHeader, &hello) == nil {
				_ = fc.SendJSON(wire.FrHeader, stdioHello{In: hello.In, Sig: hello.Sig})
			}
			<-stalled // and never a keepalive
		}()
		return mine, nil
	}
	h.start()
	for i := 0; i < 2; i++ {
		select {
		case <-dials:
		case <-time.After(3 * time.Second):
			t.Fatalf("the holder dialled %d times; a quiet stream must end within %v", i, fastStdio.idle)
		}
	}

	x := newStdioTest(t, nil)
	mine, theirs := socketPair(t)
	served := make(chan struct{})
	go func() {
		defer close(served)
		x.s.serveHolder(wire.NewConn(theirs))
	}()
	fc := wire.NewConn(mine)
	if err := fc.SendJSON(wire.FrHeader, stdioHello{Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	// A holder that says hello and then nothing, ever.
	waitClosed(t, served, "the session giving up a quiet holder")
}

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
	p := newPipes(t)
	f := startProc(t, p, false)
	h := x.holder(p, nil, hooks{})
	h.start()
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
	go h.finish(4)
	x.waitExit(4, 3*time.Second)
}

// A move that fails after the detach leaves stdin as it was, even when
// the EOF was already given (the stdin pipe is closed on our side).
func TestStdioFailedMoveAfterEOFKeepsStdin(t *testing.T) {
	x := newStdioTest(t, nil)
	p := newPipes(t)
	f := startProc(t, p, true)
	h := x.holder(p, nil, hooks{})
	h.start()
	x.send(wire.FrStdin, "abc\n")
	x.send(wire.FrEOF, "")
	eventually(t, 2*time.Second, func() (bool, string) {
		_, err := h.stdinW.Write(nil)
		return errors.Is(err, os.ErrClosed), "the holder has not closed the stdin pipe"
	})
	f.mu.Unlock()
	h = x.move(f, h, true, hooks{})
	waitClosed(t, f.exited, "the process's exit")
	go h.finish(5)
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
	p := newPipes(t)
	f := startProc(t, p, false)
	h := x.holder(p, nil, hooks{})
	h.pid = os.Getpid
	h.start()
	x.send(wire.FrSignal, string([]byte{byte(syscall.SIGUSR1)}))
	waitSignal(t, got)
	f.mu.Lock()
	st, err := h.detach(context.Background())
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

// A process with a terminal: each window size the caller sends reaches
// the process's window size pipe as one record, a frame that is none is
// dropped, and after a move (whose fresh pipe lost whatever the old one
// held) the new holder is given the latest size again.
func TestStdioWindowSizeReachesEveryHolder(t *testing.T) {
	x := newStdioTest(t, nil)
	x.s.setTTY(jobns.Winsize{Rows: 24, Cols: 80})
	p := newPipes(t).withWinsize(t)
	f := startProc(t, p, false)
	h := x.holder(p, nil, hooks{})
	h.start()
	sizes := func(p *pipes) <-chan jobns.Winsize {
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
			x.s.setTTY(jobns.DefaultWinsize)
		}
		p := newPipes(t)
		if tty {
			p.withWinsize(t)
		}
		startProc(t, p, false)
		h := x.holder(p, nil, hooks{})
		h.pid = os.Getpid
		h.start()
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

func waitSignal(t *testing.T, got <-chan os.Signal) {
	t.Helper()
	select {
	case <-got:
	case <-time.After(2 * time.Second):
		t.Fatal("no signal")
	}
}

// eventually polls ok until it holds, failing with its message after d.
func eventually(t *testing.T, d time.Duration, ok func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		done, msg := ok()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitClosed(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(5 * time.Second):
		t.Fatalf("waiting for %s: timed out", what)
	}
}

// socketPair is a connected pair of stream sockets: buffered like TCP,
// with deadlines.
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		conns[i], err = net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		conns[0].Close()
		conns[1].Close()
	})
	return conns[0], conns[1]
}

// testLogger logs through t until the test ends.
func testLogger(t *testing.T) *slog.Logger {
	w := &testLogWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testLogWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testLogWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(b), "\n"))
	}
	return len(b), nil
}
