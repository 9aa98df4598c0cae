package cluster

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"ssi/cluster/jobns"
	"ssi/cluster/wire"
)

// session is the home node's end of one attached process.
type session struct {
	a    *Agent
	cpid int
	tm   stdioTiming
	// check reports whether the agreed state still lists the process,
	// and if not, its exit code where known.
	check func() (listed bool, code *int)

	mu      sync.Mutex // protects the fields below
	more    *sync.Cond // granted grew, the caller left, or the session ended
	client  *wire.Conn // nil once the caller hung up or was cut off
	in      []byte     // the caller's stdin from offset inAt on, not yet written by any holder
	inAt    uint64
	granted uint64 // the caller's credit: stdin bytes it may send in all; inAt+len(in) never passes it
	eof     bool   // the caller's stdin ended, or the caller left
	sigs    []byte // the caller's signals from number sigAt on, not yet acknowledged
	sigAt   int
	sigLost int    // signals dropped, the queue full
	out     uint64 // output bytes passed to the caller (or dropped once it left)
	epoch   int    // the newest holder's
	cur     *sstream
	done    chan struct{}
	ended   bool
	// A process with a terminal (tty): the caller's latest window size,
	// changed wsGen times, sent to each holder stream until it has it.
	tty   bool
	ws    []byte
	wsGen int

	relay sync.Mutex // output reaches the caller from one stream at a time, in order
}

// sstream is the session's end of one holder stream.
type sstream struct {
	fc   *wire.Conn
	conn net.Conn // fc's, for deadlines and closing; nil if it is none
	wake chan struct{}
	gone chan struct{}
	once sync.Once

	// Protected by the session's mu.
	hello   stdioHello // ours, sent first
	said    bool       // hello sent
	inSent  uint64
	sigSent int
	eofSent bool
	wsGen   int    // the window size sent is the session's wsGen'th
	outAck  uint64 // output count last acknowledged
	exitAck bool   // the exit reached the caller: answer it, then stop
}

// newSession registers the session of an attached process started here.
func (a *Agent) newSession(cpid int, client *wire.Conn) *session {
	return a.openSession(cpid, client, defaultStdioTiming, nil)
}

// openSession registers a session; check nil asks the agreed state.
func (a *Agent) openSession(cpid int, client *wire.Conn, tm stdioTiming, check func() (bool, *int)) *session {
	s := &session{a: a, cpid: cpid, tm: tm, check: check, client: client, granted: stdioMaxIn,
		done: make(chan struct{})}
	s.more = sync.NewCond(&s.mu)
	if s.check == nil {
		s.check = s.listed
	}
	a.jobsMu.Lock()
	a.sessions[cpid] = s
	a.jobsMu.Unlock()
	go s.watch()
	return s
}

// fromClient relays the caller's frames until it hangs up, and has it
// granted credit meanwhile. It never stops reading, so a signal always
// gets through, whatever stdin waits: the credit bounds that instead. A
// caller that goes away closes the process's stdin; one that sends stdin
// past its credit is cut off. The first credit goes once fromClient
// runs: the caller's first frame must be wire.FrCPID.
func (s *session) fromClient(c *wire.Conn) {
	go s.credit(c)
	for {
		typ, b, err := c.Recv()
		if err != nil {
			s.hangUp(c)
			return
		}
		switch typ {
		case wire.FrStdin:
			if !s.takeIn(b) {
				s.cutOff(c)
				return
			}
		case wire.FrSignal:
			s.takeSignal(b)
		case wire.FrWinsize:
			s.takeWinsize(b)
		case wire.FrEOF:
			s.mu.Lock()
			s.eof = true
			s.kick()
			s.mu.Unlock()
		}
	}
}

// takeIn keeps stdin for the holders; false: it goes past the caller's
// credit.
func (s *session) takeIn(b []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || s.eof {
		return true // no holder will take it: dropped, not kept
	}
	if s.inAt+uint64(len(s.in))+uint64(len(b)) > s.granted {
		return false
	}
	s.in = append(s.in, b...)
	s.kick()
	return true
}

// takeSignal keeps a signal for the holders, unless stdioMaxSigs wait.
func (s *session) takeSignal(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.ended || len(b) != 1:
	case len(s.sigs) >= stdioMaxSigs:
		if s.sigLost++; s.sigLost == 1 {
			s.a.log.Warn("stdio: too many signals wait for a holder: dropping them", "cpid", s.cpid, "waiting", len(s.sigs))
		}
	default:
		s.sigs = append(s.sigs, b[0])
		s.kick()
	}
}

// setTTY makes s the session of a process with a terminal of size ws.
// Every holder stream is sent the latest size, so that one lost with a
// move's pipe is given again, and a size the pty already has changes
// nothing.
func (s *session) setTTY(ws jobns.Winsize) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tty = true
	s.ws, s.wsGen = ws.Bytes(), s.wsGen+1
}

// takeWinsize keeps the caller's new window size for the holders.
func (s *session) takeWinsize(b []byte) {
	if _, ok := jobns.ParseWinsize(b); !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.tty || s.ended {
		return
	}
	s.ws, s.wsGen = append([]byte(nil), b...), s.wsGen+1
	s.kick()
}

// hangUp: caller c is gone; the process's stdin ends after what is kept.
// A terminal that goes away hangs up: its process gets SIGHUP, as from
// a real one (a caller that could still forward its own SIGHUP may send
// a second: the same signal twice changes nothing).
func (s *session) hangUp(c *wire.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tty && s.client == c && !s.ended && len(s.sigs) < stdioMaxSigs {
		s.sigs = append(s.sigs, byte(syscall.SIGHUP))
	}
	s.eof = true
	if s.client == c {
		s.client = nil
	}
	s.kick()
	s.more.Broadcast()
}

// cutOff ends the stream of a caller that sent stdin past its credit
// (a stranger, or a broken client): keeping it would grow without bound,
// waiting for room would hold up its signals. It is told why, within
// tm.idle, and is then treated as gone.
func (s *session) cutOff(c *wire.Conn) {
	s.hangUp(c)
	s.mu.Lock()
	granted := s.granted
	s.mu.Unlock()
	s.a.log.Warn("stdio: the caller sent stdin past its credit: ending its stream", "cpid", s.cpid, "credit", granted)
	conn, _ := c.Stream().(net.Conn)
	if conn != nil {
		_ = conn.SetWriteDeadline(time.Now().Add(s.tm.idle))
	}
	_ = c.Send(wire.FrError, []byte(fmt.Sprintf("stdin past the %d bytes of credit the agent granted: stream ended", granted)))
	if conn != nil {
		_ = conn.Close()
	}
}

// credit sends caller c its credit: the first, then each grant, until c
// has gone or the session has ended. It has a goroutine of its own so
// that a caller slow to read holds up nothing else.
func (s *session) credit(c *wire.Conn) {
	var told uint64
	for {
		s.mu.Lock()
		for s.granted == told && s.client == c && !s.ended {
			s.more.Wait()
		}
		g, live := s.granted, s.client == c && !s.ended
		s.mu.Unlock()
		if !live || c.Send(wire.FrCredit, wire.CreditOf(g)) != nil {
			return
		}
		told = g
	}
}

// grant raises the caller's credit to stdioMaxIn past what the holders
// have written, once that adds a good part of it, or the holders have
// written all (so a caller that sends a little at a time never waits);
// s.mu is held.
func (s *session) grant() {
	limit := s.inAt + stdioMaxIn
	if limit > s.granted && (len(s.in) == 0 || limit-s.granted >= stdioMaxIn/4) {
		s.granted = limit
		s.more.Broadcast()
	}
}

// kick wakes the current stream's sender; s.mu is held.
func (s *session) kick() {
	if s.cur != nil {
		s.cur.kick()
	}
}

// serveHolder runs one holder's stream until it ends.
func (s *session) serveHolder(fc *wire.Conn) {
	st := &sstream{fc: fc, wake: make(chan struct{}, 1), gone: make(chan struct{})}
	st.conn, _ = fc.Stream().(net.Conn)
	defer st.close()
	st.deadline(true, s.tm.idle)
	var h stdioHello
	if err := fc.Expect(wire.FrHeader, &h); err != nil {
		s.a.log.Debug("stdio: a holder left before its hello", "cpid", s.cpid, "err", err)
		return
	}
	if !s.accept(st, h) {
		return
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		s.send(st)
	}()
	if s.read(st) {
		// The exit reached the caller: let the holder hear it.
		select {
		case <-sent:
		case <-time.After(s.tm.idle):
		}
	}
	s.mu.Lock()
	if s.cur == st {
		s.cur = nil
	}
	s.mu.Unlock()
	st.close()
	<-sent
}

// accept makes st the current stream, unless its holder is older than
// one already seen or claims what the session never had.
func (s *session) accept(st *sstream, h stdioHello) bool {
	s.mu.Lock()
	end, sigEnd := s.inAt+uint64(len(s.in)), s.sigAt+len(s.sigs)
	if newest := s.epoch; s.ended || h.Epoch < newest || h.In > end || h.Sig > sigEnd {
		s.mu.Unlock()
		s.a.log.Info("stdio: refusing a holder", "cpid", s.cpid, "epoch", h.Epoch, "newest", newest)
		return false
	}
	if h.In < s.inAt || h.Sig < s.sigAt {
		// Written to the process by another holder, yet this one lacks it:
		// a state was lost. Going on from here is all that is left.
		s.a.log.Warn("stdio: a holder lacks input already written", "cpid", s.cpid, "has", h.In, "written", s.inAt)
	}
	st.inSent, st.sigSent, st.eofSent = max(h.In, s.inAt), max(h.Sig, s.sigAt), h.EOF
	st.outAck = s.out
	st.hello = stdioHello{In: st.inSent, Sig: st.sigSent, Out: s.out}
	old := s.cur
	s.epoch, s.cur = h.Epoch, st
	st.kick()
	s.mu.Unlock()
	if old != nil {
		// Superseded: its holder has left, or has reconnected here.
		old.close()
	}
	return true
}

// read serves a holder's frames; it reports whether the exit came.
func (s *session) read(st *sstream) bool {
	for {
		st.deadline(true, s.tm.idle)
		typ, b, err := st.fc.Recv()
		if err != nil {
			return false
		}
		switch typ {
		case wire.FrStdout, wire.FrStderr:
			s.relayOut(st, typ, b)
		case wire.FrAck:
			var k stdioAck
			if json.Unmarshal(b, &k) == nil {
				s.acked(k)
			}
		case wire.FrExit:
			s.end(b)
			s.mu.Lock()
			st.exitAck = true
			st.kick()
			s.mu.Unlock()
			return true
		}
	}
}

// relayOut passes output on to the caller, less what it already has
// (from another stream, or sent again).
func (s *session) relayOut(st *sstream, typ wire.Frame, payload []byte) {
	at, b, ok := wire.SplitAt(payload)
	if !ok {
		return
	}
	s.relay.Lock()
	defer s.relay.Unlock()
	s.mu.Lock()
	if at > s.out {
		s.a.log.Warn("stdio: output missing", "cpid", s.cpid, "bytes", at-s.out)
		s.out = at
	}
	b = b[min(s.out-at, uint64(len(b))):]
	c := s.client
	s.mu.Unlock()
	if c != nil && len(b) > 0 {
		_ = c.Send(typ, b)
	}
	s.mu.Lock()
	s.out += uint64(len(b))
	st.kick()
	s.mu.Unlock()
}

// acked forgets what a holder has written to the process, which may
// earn the caller credit.
func (s *session) acked(k stdioAck) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k.In > s.inAt {
		n := min(k.In-s.inAt, uint64(len(s.in)))
		s.in, s.inAt = s.in[n:], s.inAt+n
		if len(s.in) == 0 {
			s.in = nil
		}
		s.grant()
	}
	if k.Sig > s.sigAt {
		n := min(k.Sig-s.sigAt, len(s.sigs))
		s.sigs, s.sigAt = s.sigs[n:], s.sigAt+n
	}
}

// send writes what st's holder is owed, and a keepalive when quiet.
func (s *session) send(st *sstream) {
	tick := time.NewTicker(s.tm.keepalive)
	defer tick.Stop()
	quiet := false
	for {
		fs, last := s.next(st, quiet)
		for _, f := range fs {
			if err := st.write(f, s.tm.idle); err != nil {
				st.close()
				return
			}
		}
		if last {
			return
		}
		quiet = false
		if len(fs) > 0 {
			continue
		}
		select {
		case <-st.wake:
		case <-tick.C:
			quiet = true
		case <-st.gone:
			return
		}
	}
}

// next gathers the frames st's holder is owed; last: nothing more goes
// on st.
func (s *session) next(st *sstream, quiet bool) (fs []frame, last bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-st.gone:
		return nil, true
	default:
	}
	if !st.said {
		st.said = true
		b, _ := json.Marshal(st.hello)
		fs = append(fs, frame{wire.FrHeader, b})
	}
	if st.exitAck {
		return append(fs, frame{typ: wire.FrExit}), true
	}
	if s.cur == st {
		fs = s.input(st, fs)
	}
	if s.out > st.outAck || quiet {
		st.outAck = s.out
		b, _ := json.Marshal(stdioAck{Out: s.out})
		fs = append(fs, frame{wire.FrAck, b})
	}
	return fs, false
}

// input adds the stdin, signals and EOF that st has not sent yet, a
// bounded amount per round; s.mu is held.
func (s *session) input(st *sstream, fs []frame) []frame {
	st.inSent, st.sigSent = max(st.inSent, s.inAt), max(st.sigSent, s.sigAt)
	end := s.inAt + uint64(len(s.in))
	for n := 0; st.inSent < end && n < 8; n++ {
		b := s.in[st.inSent-s.inAt:]
		b = b[:min(len(b), stdioChunk)]
		fs = append(fs, frame{wire.FrStdin, wire.WithAt(st.inSent, b)})
		st.inSent += uint64(len(b))
	}
	for ; st.sigSent < s.sigAt+len(s.sigs); st.sigSent++ {
		fs = append(fs, frame{wire.FrSignal, []byte{s.sigs[st.sigSent-s.sigAt]}})
	}
	if st.wsGen != s.wsGen && s.ws != nil {
		st.wsGen = s.wsGen
		fs = append(fs, frame{wire.FrWinsize, s.ws})
	}
	if s.eof && !st.eofSent && st.inSent == end {
		st.eofSent = true
		fs = append(fs, frame{typ: wire.FrEOF})
	}
	return fs
}

func (st *sstream) kick() {
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

func (st *sstream) deadline(read bool, d time.Duration) {
	switch {
	case st.conn == nil:
	case read:
		_ = st.conn.SetReadDeadline(time.Now().Add(d))
	default:
		_ = st.conn.SetWriteDeadline(time.Now().Add(d))
	}
}

func (st *sstream) write(f frame, d time.Duration) error {
	st.deadline(false, d)
	return st.fc.Send(f.typ, f.b)
}

// close ends the stream; its reader and sender return.
func (st *sstream) close() {
	st.once.Do(func() {
		close(st.gone)
		if c, ok := st.fc.Stream().(io.Closer); ok {
			_ = c.Close()
		}
	})
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
	s.more.Broadcast()
	s.mu.Unlock()
	if c != nil {
		s.relay.Lock() // after the output being passed on
		_ = c.Send(wire.FrExit, exit)
		s.relay.Unlock()
	}
	s.a.jobsMu.Lock()
	if s.a.sessions[s.cpid] == s {
		delete(s.a.sessions, s.cpid)
	}
	s.a.jobsMu.Unlock()
	close(s.done)
}

// watch ends the session, with an error for the caller, once the agreed
// state has not listed the process, and no holder has been attached, for
// tm.lostGrace: its node died (or cannot reach us) before its holder
// reported the exit. The caller never waits for ever; a holder still
// passing output on, however slowly, is left alone.
func (s *session) watch() {
	t := time.NewTicker(s.tm.watch)
	defer t.Stop()
	var since time.Time
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		listed, code := s.check()
		s.mu.Lock()
		attached := s.cur != nil
		s.mu.Unlock()
		switch {
		case listed || attached:
			since = time.Time{}
		case since.IsZero():
			since = time.Now()
		case time.Since(since) >= s.tm.lostGrace:
			s.lose(code)
			return
		}
	}
}

// lose ends a session whose process ended without a word from its holder.
func (s *session) lose(code *int) {
	exit := wire.ExitInfo{Code: 255}
	if code != nil {
		exit.Code = *code
	}
	s.a.log.Warn("stdio: the process ended without its holder reporting", "cpid", s.cpid, "code", exit.Code)
	s.mu.Lock()
	c := s.client
	s.mu.Unlock()
	if c != nil {
		s.relay.Lock()
		_ = c.Send(wire.FrStderr, []byte(fmt.Sprintf("ssi: process %d ended; the end of its output was lost with its node\n", s.cpid)))
		s.relay.Unlock()
	}
	b, _ := json.Marshal(exit)
	s.end(b)
}

// listed is check from the agreed state (this replica's view).
func (s *session) listed() (bool, *int) {
	st, err := s.a.member()
	if err != nil {
		return true, nil
	}
	if _, ok := st.Proc(s.cpid); ok {
		return true, nil
	}
	e, _ := st.Ended(s.cpid)
	return false, e.ExitCode
}
