package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"ssi/cluster/jobns"
	"ssi/cluster/transport"
	"ssi/cluster/wire"
)

// holder is the running node's end of an attached process's stdio.
type holder struct {
	a    *Agent
	cpid int
	home string // node whose session the holder feeds
	pid  func() int
	tm   stdioTiming
	// connect opens a stream to the session (dial, unless a test says).
	connect func(ctx context.Context) (net.Conn, error)

	stdinW, stdinR, stdoutR, stderrR *os.File
	// winW is the window size pipe of a process with a terminal (nil
	// otherwise): each size the session sends is written to it.
	winW *os.File

	mu      sync.Mutex // protects the fields below
	cond    *sync.Cond // any change of them
	epoch   int
	queue   []byte // stdin waiting to be written; it ends at offset in
	in      uint64
	eof     bool // close stdin once queue is written
	gone    bool // the process's stdin is closed: input is discarded
	sig     int  // signals received
	signals []int
	out     []outChunk // output the session has not acknowledged, from offset outAt
	outAt   uint64
	outLen  int
	paused  bool // frozen for a move: no stream, no writes, no signals
	writing bool
	closed  bool
	link    *hlink
	linkGen int       // the running link's; a resume starts a new one
	unheard time.Time // since when no session has taken us; zero while one has
	dropped int
	exit    []byte        // wire.ExitInfo, once the process ended
	told    bool          // the session passed the exit on
	exitAck chan struct{} // closed then
	quit    chan struct{} // closed by close
	pumps   sync.WaitGroup
}

// hlink is the holder's end of one stream.
type hlink struct {
	fc   *wire.Conn
	conn net.Conn
	wake chan struct{}
	// Protected by the holder's mu.
	said     bool // hello sent
	ready    bool // the session's hello came
	outSent  uint64
	inAck    uint64
	sigAck   int
	exitSent bool
}

// newHolder takes our ends of the pipes; st is what a previous holder
// left (nil for a new process).
func (a *Agent) newHolder(cpid int, home string, ends pipeEnds, st *stdioState) *holder {
	h := &holder{a: a, cpid: cpid, home: home, tm: defaultStdioTiming, stdinW: ends[0], stdinR: ends[1],
		stdoutR: ends[2], stderrR: ends[3], winW: ends[4], epoch: 1, unheard: time.Now(),
		exitAck: make(chan struct{}), quit: make(chan struct{})}
	h.cond = sync.NewCond(&h.mu)
	h.connect = h.dial
	if st != nil {
		h.restore(st)
		h.epoch = st.Epoch + 1
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
	go h.keepLinked()
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
	go h.pump(h.stdoutR, false)
	go h.pump(h.stderrR, true)
}

// pump keeps one output pipe's bytes until EOF or a deadline (a detach).
func (h *holder) pump(f *os.File, stderr bool) {
	defer h.pumps.Done()
	buf := make([]byte, stdioChunk)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			h.addOut(stderr, buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// addOut keeps output until the session has it. With no room it waits
// for the session, and the process blocks on its writes as it would on a
// terminal's; a holder that no session has taken for tm.orphan drops
// instead (its caller is gone), so that the process goes on.
func (h *holder) addOut(stderr bool, b []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.outLen >= stdioMaxOut && !h.paused && !h.closed {
		if h.unheard.IsZero() {
			h.cond.Wait()
			continue
		}
		if left := h.tm.orphan - time.Since(h.unheard); left > 0 {
			h.waitFor(left)
			continue
		}
		if h.dropped == 0 {
			h.a.log.Warn("stdio: no session takes the output: dropping it", "cpid", h.cpid)
		}
		h.dropped += len(b)
		return
	}
	if h.closed || len(b) == 0 {
		return
	}
	if k := len(h.out) - 1; k >= 0 && h.out[k].Err == stderr && len(h.out[k].B) < stdioChunk {
		h.out[k].B = append(h.out[k].B, b...)
	} else {
		h.out = append(h.out, outChunk{Err: stderr, B: append([]byte(nil), b...)})
	}
	h.outLen += len(b)
	h.poke()
}

// writer writes queued stdin to the process.
func (h *holder) writer() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for {
		for !h.closed && (h.paused || h.gone || (len(h.queue) == 0 && !h.eof)) {
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
		h.poke() // the session may forget it
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			// The process closed its stdin: what is left has no reader.
			h.queue, h.gone = nil, true
			return
		}
	}
}

// keepLinked connects to the session and serves its stream, again
// whenever it ends while the holder lives, with a growing pause while no
// session takes it (its agent restarted, or it refuses us).
func (h *holder) keepLinked() {
	h.mu.Lock()
	h.linkGen++
	gen := h.linkGen
	h.mu.Unlock()
	pause := 100 * time.Millisecond
	for {
		heard, ok := h.linkOnce(gen)
		if !ok {
			return
		}
		if heard {
			pause = 100 * time.Millisecond
			continue
		}
		select {
		case <-time.After(pause):
		case <-h.quit:
			return
		}
		pause = min(2*pause, h.tm.backoff)
	}
}

// live: link gen may go on (not closed, not paused, not replaced by a
// newer one after a resume, the exit not yet passed on); h.mu is held.
func (h *holder) live(gen int) bool { return !h.closed && !h.paused && !h.told && h.linkGen == gen }

// linkOnce opens one stream and serves it until it ends. heard: a
// session took it; ok false: link gen is over.
func (h *holder) linkOnce(gen int) (heard, ok bool) {
	h.mu.Lock()
	ok = h.live(gen)
	h.mu.Unlock()
	if !ok {
		return false, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.tm.dial)
	conn, err := h.connect(ctx)
	cancel()
	if err != nil {
		h.a.log.Debug("stdio: reaching the caller's node", "cpid", h.cpid, "err", err)
		return false, true
	}
	l := &hlink{fc: wire.NewConn(conn), conn: conn, wake: make(chan struct{}, 1)}
	h.mu.Lock()
	if !h.live(gen) {
		// A detach began while we dialled: it took the state without
		// this stream, which must not count now. Nothing went on it.
		h.mu.Unlock()
		conn.Close()
		return false, false
	}
	h.link = l
	h.mu.Unlock()
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		h.send(l)
	}()
	h.serve(l)
	h.mu.Lock()
	if h.link == l {
		h.link = nil
		if l.ready {
			h.unheard = time.Now()
		}
	}
	heard = l.ready
	h.cond.Broadcast()
	h.mu.Unlock()
	conn.Close()
	select { // the sender sees l is over
	case l.wake <- struct{}{}:
	default:
	}
	<-sent
	return heard, true
}

func (h *holder) dial(ctx context.Context) (net.Conn, error) {
	addr, err := h.a.nodeAddr(h.home)
	if err != nil {
		return nil, err
	}
	conn, err := transport.Dial(ctx, addr, transport.ProtoMigrate, h.a.identity())
	if err != nil {
		return nil, err
	}
	_ = conn.SetWriteDeadline(time.Now().Add(h.tm.idle))
	if err := wire.NewConn(conn).SendJSON(wire.FrHeader, wire.StreamHeader{Kind: "stdio", CPID: h.cpid}); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// serve takes the session's frames until the stream ends, goes quiet, or
// no longer counts.
func (h *holder) serve(l *hlink) {
	for {
		_ = l.conn.SetReadDeadline(time.Now().Add(h.tm.idle))
		typ, b, err := l.fc.Recv()
		if err != nil {
			return
		}
		sig, ok := h.apply(l, typ, b)
		if sig > 0 {
			h.signal(sig)
		}
		if !ok {
			return
		}
	}
}

// apply takes one frame from the session. It returns a signal to
// deliver, and false once the stream no longer counts (detached, closed,
// not a session that speaks first) or the exit was passed on.
func (h *holder) apply(l *hlink, typ wire.Frame, b []byte) (sig int, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.link != l || (!l.ready && typ != wire.FrHeader) {
		return 0, false
	}
	switch typ {
	case wire.FrHeader:
		var m stdioHello
		if json.Unmarshal(b, &m) != nil {
			return 0, false
		}
		h.hello(l, m)
	case wire.FrStdin:
		at, b, ok := wire.SplitAt(b)
		if !ok {
			return 0, false
		}
		h.takeIn(at, b)
	case wire.FrEOF:
		h.eof = true
	case wire.FrSignal:
		if len(b) == 1 {
			h.sig++
			sig = int(b[0])
		}
	case wire.FrWinsize:
		h.resize(b)
	case wire.FrAck:
		var k stdioAck
		if json.Unmarshal(b, &k) == nil {
			h.trimOut(k.Out)
		}
	case wire.FrExit:
		if h.exit != nil && !h.told {
			h.told = true
			close(h.exitAck)
		}
		return 0, false
	}
	h.cond.Broadcast()
	h.poke()
	return sig, true
}

// resize writes a window size record to the process's window size
// pipe; h.mu is held. It never waits: the process's init reads the pipe
// at once, so it is full only if the init has been stopped for thousands
// of resizes, and then this one is dropped (the next stream to the
// session brings the latest size again).
func (h *holder) resize(b []byte) {
	if h.winW == nil || len(b) != jobns.WinsizeLen {
		return
	}
	var werr error
	rc, err := h.winW.SyscallConn()
	if err == nil {
		err = rc.Write(func(fd uintptr) bool {
			_, werr = unix.Write(int(fd), b)
			return true // one try: never parked
		})
	}
	if err = errors.Join(err, werr); err != nil {
		h.a.log.Debug("stdio: a window size not passed on", "cpid", h.cpid, "err", err)
	}
}

// takeIn queues stdin that starts at offset at, less what we have;
// h.mu is held.
func (h *holder) takeIn(at uint64, b []byte) {
	if at > h.in {
		h.a.log.Warn("stdio: input missing", "cpid", h.cpid, "bytes", at-h.in)
		h.in = at
	}
	b = b[min(h.in-at, uint64(len(b))):]
	h.in += uint64(len(b))
	if !h.gone {
		h.queue = append(h.queue, b...)
	}
}

// hello: the session took the stream; h.mu is held.
func (h *holder) hello(l *hlink, m stdioHello) {
	if m.In > h.in || m.Sig > h.sig {
		h.a.log.Warn("stdio: the caller's node resumes input past this holder", "cpid", h.cpid, "has", h.in, "resumes", m.In)
		h.in, h.sig = max(h.in, m.In), max(h.sig, m.Sig)
	}
	h.trimOut(m.Out)
	l.outSent = h.outAt
	l.ready = true
	h.unheard = time.Time{}
}

// trimOut forgets output the session has; h.mu is held.
func (h *holder) trimOut(upTo uint64) {
	for len(h.out) > 0 && h.outAt < upTo {
		n := min(uint64(len(h.out[0].B)), upTo-h.outAt)
		h.out[0].B = h.out[0].B[n:]
		h.outAt += n
		h.outLen -= int(n)
		if len(h.out[0].B) == 0 {
			h.out = h.out[1:]
		}
	}
	// The session cannot have more than we had; if it says so, our next
	// byte must still count as its next one.
	h.outAt = max(h.outAt, upTo)
}

// send writes what the session is owed on l, and a keepalive when quiet.
func (h *holder) send(l *hlink) {
	tick := time.NewTicker(h.tm.keepalive)
	defer tick.Stop()
	quiet := false
	for {
		fs, ok := h.next(l, quiet)
		if !ok {
			return
		}
		for _, f := range fs {
			_ = l.conn.SetWriteDeadline(time.Now().Add(h.tm.idle))
			if err := l.fc.Send(f.typ, f.b); err != nil {
				l.conn.Close()
				return
			}
		}
		quiet = false
		if len(fs) > 0 {
			continue
		}
		select {
		case <-l.wake:
		case <-tick.C:
			quiet = true
		case <-h.quit:
			return
		}
	}
}

// next gathers the frames the session is owed on l; ok false: l is over.
func (h *holder) next(l *hlink, quiet bool) (fs []frame, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.link != l {
		return nil, false
	}
	if !l.said {
		l.said = true
		b, _ := json.Marshal(stdioHello{Epoch: h.epoch, In: h.in, Sig: h.sig, EOF: h.eof})
		return []frame{{wire.FrHeader, b}}, true
	}
	if !l.ready {
		return nil, true
	}
	l.outSent = max(l.outSent, h.outAt)
	at, window := h.outAt, h.outAt+stdioOutWindow
	for _, c := range h.out {
		end := at + uint64(len(c.B))
		if upTo := min(end, window); l.outSent < upTo {
			typ := wire.FrStdout
			if c.Err {
				typ = wire.FrStderr
			}
			fs = append(fs, frame{typ, wire.WithAt(l.outSent, c.B[l.outSent-at:upTo-at])})
			l.outSent = upTo
		}
		at = end
	}
	written := h.in - min(h.in, uint64(len(h.queue)))
	if written > l.inAck || h.sig > l.sigAck || quiet {
		l.inAck, l.sigAck = written, h.sig
		b, _ := json.Marshal(stdioAck{In: written, Sig: h.sig})
		fs = append(fs, frame{wire.FrAck, b})
	}
	if h.exit != nil && !h.told && !l.exitSent && l.outSent == at {
		l.exitSent = true
		fs = append(fs, frame{wire.FrExit, h.exit})
	}
	return fs, true
}

// poke wakes the stream's sender; h.mu is held.
func (h *holder) poke() {
	if h.link != nil {
		select {
		case h.link.wake <- struct{}{}:
		default:
		}
	}
}

// waitFor is cond.Wait for at most d; h.mu is held.
func (h *holder) waitFor(d time.Duration) {
	t := time.AfterFunc(d, func() {
		h.mu.Lock()
		h.cond.Broadcast()
		h.mu.Unlock()
	})
	h.cond.Wait()
	t.Stop()
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

// finish waits for the output to end (the process exited), then tells
// the session how it ended, and closes the holder once the session has
// passed that on, or after tm.exitWait.
func (h *holder) finish(code int) {
	ended := make(chan struct{})
	go func() {
		h.pumps.Wait()
		close(ended)
	}()
	select {
	case <-ended:
	case <-time.After(h.tm.exitWait):
		h.a.log.Warn("stdio: the process's output did not end", "cpid", h.cpid)
	}
	b, _ := json.Marshal(wire.ExitInfo{Code: code})
	h.mu.Lock()
	h.exit = b
	h.poke()
	h.mu.Unlock()
	select {
	case <-h.exitAck:
	case <-time.After(h.tm.exitWait):
		h.a.log.Warn("stdio: the caller's node did not take the exit", "cpid", h.cpid)
	}
	h.close()
}

// close releases the pipes and the link.
func (h *holder) close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	l := h.link
	h.link = nil
	close(h.quit)
	h.cond.Broadcast()
	h.mu.Unlock()
	if l != nil {
		l.conn.Close()
	}
	for _, f := range []*os.File{h.stdinW, h.stdinR, h.stdoutR, h.stderrR, h.winW} {
		if f != nil {
			_ = f.Close()
		}
	}
}
