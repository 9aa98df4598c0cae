package stdio

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"ssi/cluster/jobns"
	"ssi/cluster/wire"
)

// hlink is the holder's end of one stream.
type hlink struct {
	h    *Holder
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
	overran  bool // the session sent stdin past maxIn (takeIn)
}

// keepLinked connects to the session and serves its stream, again
// whenever it ends while the holder lives, with a growing pause while no
// session takes it (its agent restarted, or it refuses us).
func (h *Holder) keepLinked() {
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
func (h *Holder) live(gen int) bool { return !h.closed && !h.paused && !h.told && h.linkGen == gen }

// linkOnce opens one stream and serves it until it ends. heard: a
// session took it; ok false: link gen is over.
func (h *Holder) linkOnce(gen int) (heard, ok bool) {
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
		h.log.Debug("stdio: reaching the caller's node", "cpid", h.cpid, "err", err)
		return false, true
	}
	l := &hlink{h: h, fc: wire.NewConn(conn), conn: conn, wake: make(chan struct{}, 1)}
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
		l.send()
	}()
	l.serve()
	h.mu.Lock()
	if h.link == l {
		h.link = nil
		if l.ready {
			h.unheard = time.Now()
		}
	}
	// A session that overran us is not one that took us: the next
	// attempt waits, as for one that refuses.
	heard = l.ready && !l.overran
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

// connectSession opens a stream to the session through dial and names
// the process on it.
func (h *Holder) connectSession(ctx context.Context) (net.Conn, error) {
	conn, err := h.dial(ctx, h.home)
	if err != nil {
		return nil, err
	}
	_ = conn.SetWriteDeadline(time.Now().Add(h.tm.idle))
	if err := wire.NewConn(conn).SendJSON(wire.FrHeader, wire.StreamHeader{Kind: wire.KindStdio, CPID: h.cpid}); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// serve takes the session's frames until the stream ends, goes quiet, or
// no longer counts.
func (l *hlink) serve() {
	for {
		_ = l.conn.SetReadDeadline(time.Now().Add(l.h.tm.idle))
		typ, b, err := l.fc.Recv()
		if err != nil {
			return
		}
		sig, ok := l.apply(typ, b)
		if sig > 0 {
			l.h.signal(sig)
		}
		if !ok {
			return
		}
	}
}

// apply takes one frame from the session. It returns a signal to
// deliver, and false once the stream no longer counts (detached, closed,
// not a session that speaks first) or the exit was passed on.
func (l *hlink) apply(typ wire.Frame, b []byte) (sig int, ok bool) {
	h := l.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.link != l || (!l.ready && typ != wire.FrHeader) {
		return 0, false
	}
	switch typ {
	case wire.FrHeader:
		var m helloMsg
		if json.Unmarshal(b, &m) != nil {
			return 0, false
		}
		l.hello(m)
	case wire.FrStdin:
		at, b, ok := wire.SplitAt(b)
		if !ok {
			return 0, false
		}
		if !h.takeIn(at, b) {
			l.overran = true
			return 0, false
		}
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
		var k ackMsg
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
func (h *Holder) resize(b []byte) {
	if h.p.WinW == nil || len(b) != jobns.WinsizeLen {
		return
	}
	var werr error
	rc, err := h.p.WinW.SyscallConn()
	if err == nil {
		err = rc.Write(func(fd uintptr) bool {
			_, werr = unix.Write(int(fd), b)
			return true // one try: never parked
		})
	}
	if err = errors.Join(err, werr); err != nil {
		h.log.Debug("stdio: a window size not passed on", "cpid", h.cpid, "err", err)
	}
}

// takeIn queues stdin that starts at offset at, less what we have;
// h.mu is held. It takes nothing and returns false if that would queue
// more than maxIn: a session sends no further than its caller's credit,
// maxIn past what we acknowledged writing, so only a broken or hostile
// peer does, and keeping what it sends would grow without bound. The
// stream then ends; the next one resumes from h.in, where the session
// still keeps the rest (it forgets only what we acknowledged).
func (h *Holder) takeIn(at uint64, b []byte) bool {
	if at > h.in {
		h.log.Warn("stdio: input missing", "cpid", h.cpid, "bytes", at-h.in)
		h.in = at
	}
	b = b[min(h.in-at, uint64(len(b))):]
	if !h.gone && len(h.queue)+len(b) > maxIn {
		h.log.Warn("stdio: the caller's node sent stdin past its bound: ending the stream",
			"cpid", h.cpid, "queued", len(h.queue), "bound", maxIn)
		return false
	}
	h.in += uint64(len(b))
	if !h.gone {
		h.queue = append(h.queue, b...)
	}
	return true
}

// hello: the session took the stream; the holder's mu is held.
func (l *hlink) hello(m helloMsg) {
	h := l.h
	if m.In > h.in || m.Sig > h.sig {
		h.log.Warn("stdio: the caller's node resumes input past this holder", "cpid", h.cpid, "has", h.in, "resumes", m.In)
		h.in, h.sig = max(h.in, m.In), max(h.sig, m.Sig)
	}
	h.trimOut(m.Out)
	l.outSent = h.outAt
	l.ready = true
	h.unheard = time.Time{}
}

// trimOut forgets output the session has; h.mu is held.
func (h *Holder) trimOut(upTo uint64) {
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
func (l *hlink) send() {
	tick := time.NewTicker(l.h.tm.keepalive)
	defer tick.Stop()
	quiet := false
	for {
		fs, ok := l.next(quiet)
		if !ok {
			return
		}
		for _, f := range fs {
			_ = l.conn.SetWriteDeadline(time.Now().Add(l.h.tm.idle))
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
		case <-l.h.quit:
			return
		}
	}
}

// next gathers the frames the session is owed on l; ok false: l is over.
func (l *hlink) next(quiet bool) (fs []frame, ok bool) {
	h := l.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.link != l {
		return nil, false
	}
	if !l.said {
		l.said = true
		b, _ := json.Marshal(helloMsg{Epoch: h.epoch, In: h.in, Sig: h.sig, EOF: h.eof})
		return []frame{{wire.FrHeader, b}}, true
	}
	if !l.ready {
		return nil, true
	}
	l.outSent = max(l.outSent, h.outAt)
	at, window := h.outAt, h.outAt+outWindow
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
		b, _ := json.Marshal(ackMsg{In: written, Sig: h.sig})
		fs = append(fs, frame{wire.FrAck, b})
	}
	if h.exit != nil && !h.told && !l.exitSent && l.outSent == at {
		l.exitSent = true
		fs = append(fs, frame{wire.FrExit, h.exit})
	}
	return fs, true
}
