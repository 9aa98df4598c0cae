package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"ssi/cluster/transport"
)

// Attached stdio. The caller of `ssi run` talks to its own agent (the
// process's home): a session there relays frames between the caller and
// a holder, which lives on the node where the process runs and holds our
// ends of the process's stdin, stdout and stderr pipes. When the process
// moves, the old holder detaches (everything the process wrote reaches
// the caller, stdin not yet read is handed over) and a new holder on the
// destination attaches; the caller never notices.

// session is the home node's end of one attached process.
type session struct {
	a    *Agent
	cpid int

	mu     sync.Mutex
	client *frameConn // nil once the caller hung up
	hc     *frameConn // the current holder; nil while detached
	queue  [][2][]byte
	done   chan struct{}
	ended  bool
}

func (a *Agent) newSession(cpid int, client *frameConn) *session {
	s := &session{a: a, cpid: cpid, client: client, done: make(chan struct{})}
	a.jobsMu.Lock()
	a.sessions[cpid] = s
	a.jobsMu.Unlock()
	return s
}

// fromClient relays the caller's frames until it hangs up. A caller that
// goes away closes the process's stdin.
func (s *session) fromClient(c *frameConn) {
	for {
		typ, b, err := c.recv()
		if err != nil {
			s.toHolder(frEOF, nil)
			s.mu.Lock()
			s.client = nil
			s.mu.Unlock()
			return
		}
		switch typ {
		case frStdin, frEOF, frSignal:
			s.toHolder(typ, b)
		}
	}
}

// toHolder sends a frame to the holder, or queues it while none is
// attached (during a migration).
func (s *session) toHolder(typ byte, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hc != nil && s.hc.send(typ, b) == nil {
		return
	}
	s.queue = append(s.queue, [2][]byte{{typ}, b})
}

func (s *session) toClient(typ byte, b []byte) {
	s.mu.Lock()
	c := s.client
	s.mu.Unlock()
	if c != nil {
		_ = c.send(typ, b)
	}
}

// serveHolder runs one holder's stream: queued input first, then live.
func (s *session) serveHolder(hc *frameConn) {
	s.mu.Lock()
	for _, f := range s.queue {
		if err := hc.send(f[0][0], f[1]); err != nil {
			s.mu.Unlock()
			return
		}
	}
	s.queue = nil
	s.hc = hc
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.hc == hc {
			s.hc = nil
		}
		s.mu.Unlock()
	}()
	for {
		typ, b, err := hc.recv()
		if err != nil {
			return
		}
		switch typ {
		case frStdout, frStderr:
			s.toClient(typ, b)
		case frDetach:
			// Nothing more goes to this holder: input waits for the next.
			s.mu.Lock()
			if s.hc == hc {
				s.hc = nil
			}
			_ = hc.send(frDetach, nil)
			s.mu.Unlock()
			return
		case frExit:
			s.end(b)
			return
		}
	}
}

// end passes the exit to the caller and forgets the session.
func (s *session) end(exit []byte) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	c := s.client
	s.mu.Unlock()
	if c != nil {
		_ = c.send(frExit, exit)
	}
	s.a.jobsMu.Lock()
	delete(s.a.sessions, s.cpid)
	s.a.jobsMu.Unlock()
	close(s.done)
}

// stdioState is what a detached holder hands to the next one.
type stdioState struct {
	Pending []byte `json:"pending,omitempty"` // stdin not yet read by the process
	EOF     bool   `json:"eof,omitempty"`
	Signals []int  `json:"signals,omitempty"` // signals that arrived while it was frozen
}

// holder is the running node's end of an attached process's stdio.
type holder struct {
	a    *Agent
	cpid int
	home string // node whose session the holder feeds
	pid  func() int

	stdinW, stdinR, stdoutR, stderrR *os.File

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []byte // stdin waiting to be written
	eof     bool   // close stdin once queue is written
	paused  bool   // frozen for a move: write nothing, deliver no signal
	writing bool
	signals []int
	hc      *frameConn
	conn    net.Conn
	linkGen int // the running link's; a resume starts a new one
	pumps   sync.WaitGroup
	closed  bool
	// detached is closed when the session acknowledges a detach.
	detached chan struct{}
}

// newHolder takes our ends of the pipes; st is what a previous holder
// left (nil for a new process).
func (a *Agent) newHolder(cpid int, home string, stdinW, stdinR, stdoutR, stderrR *os.File, st *stdioState) *holder {
	h := &holder{a: a, cpid: cpid, home: home, stdinW: stdinW, stdinR: stdinR, stdoutR: stdoutR, stderrR: stderrR}
	h.cond = sync.NewCond(&h.mu)
	if st != nil {
		h.queue, h.eof, h.signals = append([]byte(nil), st.Pending...), st.EOF, st.Signals
	}
	return h
}

// start runs the holder: pumps, the stdin writer and the session link.
func (h *holder) start() {
	go h.writer()
	h.run()
}

// run (re)starts relaying: output pumps, the session link, and the
// signals that arrived while the process was frozen.
func (h *holder) run() {
	h.startPumps()
	go h.link()
	h.mu.Lock()
	sigs := h.signals
	h.signals = nil
	h.mu.Unlock()
	for _, s := range sigs {
		h.signal(s)
	}
}

func (h *holder) startPumps() {
	_ = h.stdoutR.SetReadDeadline(time.Time{})
	_ = h.stderrR.SetReadDeadline(time.Time{})
	h.pumps.Add(2)
	go h.pump(h.stdoutR, frStdout)
	go h.pump(h.stderrR, frStderr)
}

// pump forwards one output pipe until EOF or a deadline (a detach).
func (h *holder) pump(f *os.File, typ byte) {
	defer h.pumps.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			h.out(typ, buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// out sends output to the session; without one it is dropped (the
// caller is gone or unreachable), so the process never blocks on it.
func (h *holder) out(typ byte, b []byte) {
	h.mu.Lock()
	hc := h.hc
	h.mu.Unlock()
	if hc != nil {
		_ = hc.send(typ, b)
	}
}

// writer writes queued stdin to the process.
func (h *holder) writer() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for {
		for !h.closed && (h.paused || (len(h.queue) == 0 && !h.eof)) {
			h.cond.Wait()
		}
		if h.closed {
			return
		}
		if len(h.queue) == 0 && h.eof {
			_ = h.stdinW.Close()
			return
		}
		chunk := h.queue
		h.writing = true
		h.mu.Unlock()
		n, err := h.stdinW.Write(chunk)
		h.mu.Lock()
		h.writing = false
		h.queue = h.queue[n:]
		h.cond.Broadcast()
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			// The process closed its stdin: what is left has no reader.
			h.queue = nil
			return
		}
	}
}

// link connects to the session and serves its frames, reconnecting
// while the holder lives (the home agent may restart).
func (h *holder) link() {
	h.mu.Lock()
	h.linkGen++
	gen := h.linkGen
	h.mu.Unlock()
	// live: this link may go on (not closed, not paused, not replaced by
	// a newer one after a resume).
	live := func() bool { return !h.closed && !h.paused && h.linkGen == gen }
	for {
		h.mu.Lock()
		if !live() {
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
		conn, err := h.dial()
		if err != nil {
			h.a.log.Debug("stdio: reaching the caller's node", "cpid", h.cpid, "err", err)
			time.Sleep(time.Second)
			continue
		}
		hc := newFrameConn(conn)
		h.mu.Lock()
		if !live() {
			// A detach began while we dialled: its state was taken
			// without this link, which must not take input now.
			h.mu.Unlock()
			conn.Close()
			return
		}
		h.hc, h.conn = hc, conn
		h.mu.Unlock()
		got := h.serve(hc)
		h.mu.Lock()
		if h.hc == hc {
			h.hc, h.conn = nil, nil
		}
		h.mu.Unlock()
		conn.Close()
		if !got {
			// Closed at once: no session there (its agent restarted,
			// or it refuses us). Do not hammer it.
			time.Sleep(time.Second)
		}
	}
}

func (h *holder) dial() (net.Conn, error) {
	addr, err := h.a.nodeAddr(h.home)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id := h.a.identity()
	conn, err := transport.Dial(ctx, addr, transport.ProtoMigrate, id)
	if err != nil {
		return nil, err
	}
	if err := newFrameConn(conn).sendJSON(frHeader, streamHeader{Kind: "stdio", CPID: h.cpid}); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// serve handles the session's frames until the stream ends or detaches;
// it reports whether any frame came.
func (h *holder) serve(hc *frameConn) (got bool) {
	for {
		typ, b, err := hc.recv()
		if err != nil {
			return got
		}
		got = true
		switch typ {
		case frStdin:
			h.mu.Lock()
			h.queue = append(h.queue, b...)
			h.cond.Broadcast()
			h.mu.Unlock()
		case frEOF:
			h.mu.Lock()
			h.eof = true
			h.cond.Broadcast()
			h.mu.Unlock()
		case frSignal:
			if len(b) == 1 {
				h.signal(int(b[0]))
			}
		case frDetach:
			h.mu.Lock()
			if h.detached != nil {
				close(h.detached)
				h.detached = nil
			}
			h.mu.Unlock()
			return got
		}
	}
}

// signal delivers sig to the process's init (which forwards it to the
// command), or keeps it for later while the process is frozen.
func (h *holder) signal(sig int) {
	h.mu.Lock()
	if h.paused {
		h.signals = append(h.signals, sig)
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	if pid := h.pid(); pid > 0 {
		_ = syscall.Kill(pid, syscall.Signal(sig))
	}
}

// detach is called with the process frozen: it forwards everything the
// process wrote, stops the session sending, and takes back the stdin the
// process has not read. The holder can then be resumed or closed.
func (h *holder) detach(ctx context.Context) (st *stdioState, err error) {
	h.mu.Lock()
	h.paused = true
	h.cond.Broadcast()
	_ = h.stdinW.SetWriteDeadline(time.Now())
	for h.writing {
		h.cond.Wait()
	}
	_ = h.stdinW.SetWriteDeadline(time.Time{})
	hc, conn := h.hc, h.conn
	var detached chan struct{}
	if hc != nil {
		detached = make(chan struct{})
		h.detached = detached
	}
	h.mu.Unlock()
	// A stalled caller must not keep the process frozen: sends to it end.
	if conn != nil {
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	}
	defer func() {
		if err != nil {
			// The move will not happen: run on here as before.
			h.mu.Lock()
			back := &stdioState{Pending: h.queue, EOF: h.eof, Signals: h.signals}
			h.queue, h.signals = nil, nil
			h.mu.Unlock()
			if conn != nil {
				conn.Close()
			}
			h.resume(back)
		}
	}()

	// Output: what the pumps have not read is still in the pipes.
	_ = h.stdoutR.SetReadDeadline(time.Now())
	_ = h.stderrR.SetReadDeadline(time.Now())
	h.pumps.Wait()
	for _, p := range []struct {
		f   *os.File
		typ byte
	}{{h.stdoutR, frStdout}, {h.stderrR, frStderr}} {
		b, err := drain(p.f)
		if err != nil {
			return nil, fmt.Errorf("draining output: %w", err)
		}
		if len(b) > 0 {
			h.out(p.typ, b)
		}
	}
	if hc != nil {
		if err := hc.send(frDetach, nil); err == nil {
			select {
			case <-detached:
			case <-ctx.Done():
				return nil, fmt.Errorf("the caller's node did not acknowledge the detach: %w", ctx.Err())
			case <-time.After(10 * time.Second):
				// The session is unreachable: input it holds stays queued
				// there for the next holder.
			}
		}
	}
	inPipe, err := drain(h.stdinR)
	if err != nil {
		// What was read is not lost: it goes back in front of the queue.
		h.mu.Lock()
		h.queue = append(inPipe, h.queue...)
		h.mu.Unlock()
		return nil, fmt.Errorf("draining stdin: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st = &stdioState{Pending: append(inPipe, h.queue...), EOF: h.eof, Signals: h.signals}
	h.queue, h.signals = nil, nil
	if h.conn != nil {
		h.conn.Close()
	}
	return st, nil
}

// resume undoes a detach: the move failed, the process runs here again.
func (h *holder) resume(st *stdioState) {
	h.mu.Lock()
	h.queue, h.eof, h.signals = st.Pending, st.EOF, st.Signals
	h.paused = false
	h.cond.Broadcast()
	h.mu.Unlock()
	h.run()
}

// finish waits for the output to end (the process exited), then tells
// the session how it ended.
func (h *holder) finish(code int) {
	h.pumps.Wait()
	h.mu.Lock()
	hc := h.hc
	h.mu.Unlock()
	if hc == nil {
		// The session may be reconnecting: give it a moment.
		deadline := time.Now().Add(10 * time.Second)
		for hc == nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			h.mu.Lock()
			hc = h.hc
			h.mu.Unlock()
		}
	}
	if hc != nil {
		b, _ := json.Marshal(exitInfo{Code: code})
		_ = hc.send(frExit, b)
	}
	h.close()
}

// close releases the pipes and the link.
func (h *holder) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	h.cond.Broadcast()
	if h.conn != nil {
		h.conn.Close()
	}
	for _, f := range []*os.File{h.stdinW, h.stdinR, h.stdoutR, h.stderrR} {
		_ = f.Close()
	}
}

// drain reads what a pipe holds now, without waiting for more. It asks
// the kernel how much is there (FIONREAD) instead of relying on
// non-blocking reads: a stdin pipe shares its blocking mode with the
// process reading it.
func drain(f *os.File) ([]byte, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var out []byte
	for {
		var rerr error
		var got int
		if err := rc.Control(func(fd uintptr) {
			n, err := unix.IoctlGetInt(int(fd), unix.TIOCINQ) // FIONREAD
			if err != nil || n == 0 {
				rerr = err
				return
			}
			buf := make([]byte, n)
			got, rerr = unix.Read(int(fd), buf)
			if got > 0 {
				out = append(out, buf[:got]...)
			}
		}); err != nil {
			return out, err
		}
		if rerr != nil {
			return out, rerr
		}
		if got <= 0 {
			return out, nil
		}
	}
}
