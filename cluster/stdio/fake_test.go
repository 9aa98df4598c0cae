package stdio

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ssi/cluster/wire"
)

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
			x.s.ServeHolder(fc)
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
func (x *stdioTest) holder(p *procPipes, st *State, hk hooks) *Holder {
	h := bareHolder(x.t, p, st)
	h.connect = x.connect(hk)
	return h
}

// bareHolder is a holder for p's pipes with no way to its session yet:
// the test sets h.connect.
func bareHolder(t *testing.T, p *procPipes, st *State) *Holder {
	ours := &Pipes{StdinW: p.inW, StdinR: p.inR, StdoutR: p.outR, StderrR: p.errR, WinW: p.wsW}
	h := NewHolder(testCPID, "home", func() int { return 0 }, ours, st, nil, testLogger(t))
	h.tm = fastStdio
	t.Cleanup(h.Close)
	return h
}

// procPipes are one node's stdio pipes of the process: the holder's ends
// (inW, inR, outR, errR, and wsW for a process with a terminal) and the
// process's (in, outW, errW, wsR).
type procPipes struct {
	inR, inW, outR, outW, errR, errW *os.File
	wsR, wsW                         *os.File // nil: no terminal
	in                               int      // the process's stdin: a second descriptor of inR
	once                             sync.Once
	// inMu orders reads of in with its close: a read after the close
	// could take bytes of whatever the number is reused for next (a
	// later test's socket).
	inMu     sync.Mutex
	inClosed bool
}

// readIn reads the process's stdin; EBADF once it is closed.
func (p *procPipes) readIn(buf []byte) (int, error) {
	p.inMu.Lock()
	defer p.inMu.Unlock()
	if p.inClosed {
		return 0, unix.EBADF
	}
	return unix.Read(p.in, buf)
}

// withWinsize gives p the window size pipe of a process with a terminal.
func (p *procPipes) withWinsize(t *testing.T) *procPipes {
	t.Helper()
	var err error
	if p.wsR, p.wsW, err = os.Pipe(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.wsR.Close() })
	return p
}

func newProcPipes(t *testing.T) *procPipes {
	t.Helper()
	var p procPipes
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
	p      *procPipes
	line   []byte
	exited chan struct{}
}

func startProc(t *testing.T, p *procPipes, frozen bool) *fakeProc {
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
		n, err := f.p.readIn(buf)
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
func (p *procPipes) close() {
	p.once.Do(func() {
		p.inMu.Lock()
		unix.Close(p.in)
		p.inClosed = true
		p.inMu.Unlock()
		p.outW.Close()
		p.errW.Close()
	})
}

// move moves f from holder h to a new holder on new pipes, as a
// migration does: freeze, detach, restore, start, resume, close the
// source. With fail, the move fails after the detach and h resumes.
func (x *stdioTest) move(f *fakeProc, h *Holder, fail bool, hk hooks) *Holder {
	x.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	return x.moveFrozen(f, h, fail, hk)
}

// moveFrozen is move for a process the caller has frozen.
func (x *stdioTest) moveFrozen(f *fakeProc, h *Holder, fail bool, hk hooks) *Holder {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t0 := time.Now()
	st, err := h.Detach(ctx)
	if err != nil {
		x.t.Fatalf("detach: %v", err)
	}
	if d := time.Since(t0); d > time.Second {
		x.t.Fatalf("detach took %v", d)
	}
	if fail {
		h.Resume(st)
		return h
	}
	// st travels as JSON, as in wire.FrPending.
	b, err := json.Marshal(st)
	if err != nil {
		x.t.Fatal(err)
	}
	var there State
	if err := json.Unmarshal(b, &there); err != nil {
		x.t.Fatal(err)
	}
	return x.land(f, h, &there, hk)
}

// land restores f, frozen and detached from h with st, onto new pipes
// under a new holder (the same process: the same pid), starts it and
// closes h, as a destination and then the source do.
func (x *stdioTest) land(f *fakeProc, h *Holder, st *State, hk hooks) *Holder {
	x.t.Helper()
	p := newProcPipes(x.t)
	if f.p.wsR != nil {
		p.withWinsize(x.t)
	}
	nh := x.holder(p, st, hk)
	nh.pid = h.pid
	old := f.p
	f.p = p
	old.close()
	nh.Start()
	h.Close()
	return nh
}
