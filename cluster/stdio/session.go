package stdio

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"ssi/cluster/jobns"
	"ssi/cluster/wire"
)

// Sessions is the home node's table of sessions: one per attached
// process started here, until its exit has reached its caller.
type Sessions struct {
	// listed reports whether the agreed state still lists a process,
	// and if not, its exit code where known.
	listed func(cpid int) (bool, *int)
	log    *slog.Logger
	tm     Timing

	mu sync.Mutex // protects m
	m  map[int]*Session
}

// NewSessions returns an empty table. listed reports whether the agreed
// state (this replica's view) still lists a process, and if not, its
// exit code where known: a session whose process is no longer listed,
// and has no holder, ends (see Session.watch).
func NewSessions(listed func(cpid int) (bool, *int), log *slog.Logger) *Sessions {
	return &Sessions{listed: listed, log: log, tm: DefaultTiming, m: map[int]*Session{}}
}

// Open registers the session of an attached process started here, whose
// caller is client; the caller's frames are relayed once FromClient runs.
func (t *Sessions) Open(cpid int, client *wire.Conn) *Session {
	s := &Session{t: t, cpid: cpid, tm: t.tm, log: t.log, client: client, granted: maxIn,
		done: make(chan struct{})}
	s.more = sync.NewCond(&s.mu)
	t.mu.Lock()
	t.m[cpid] = s
	t.mu.Unlock()
	go s.watch()
	return s
}

// Get returns the session of process cpid, nil if none.
func (t *Sessions) Get(cpid int) *Session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[cpid]
}

// forget drops s, unless a newer session of its process took its place.
func (t *Sessions) forget(s *Session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m[s.cpid] == s {
		delete(t.m, s.cpid)
	}
}

// Session is the home node's end of one attached process.
type Session struct {
	t    *Sessions
	cpid int
	tm   Timing
	log  *slog.Logger

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

// Done is closed once the session has ended: the exit reached the
// caller (or the process was lost) and the table forgot the session.
func (s *Session) Done() <-chan struct{} { return s.done }

// FromClient relays the caller's frames until it hangs up, and has it
// granted credit meanwhile. It never stops reading, so a signal always
// gets through, whatever stdin waits: the credit bounds that instead. A
// caller that goes away closes the process's stdin; one that sends stdin
// past its credit is cut off. The first credit goes once FromClient
// runs: the caller's first frame must be wire.FrCPID.
func (s *Session) FromClient(c *wire.Conn) {
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
func (s *Session) takeIn(b []byte) bool {
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

// takeSignal keeps a signal for the holders, unless maxSigs wait.
func (s *Session) takeSignal(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.ended || len(b) != 1:
	case len(s.sigs) >= maxSigs:
		if s.sigLost++; s.sigLost == 1 {
			s.log.Warn("stdio: too many signals wait for a holder: dropping them", "cpid", s.cpid, "waiting", len(s.sigs))
		}
	default:
		s.sigs = append(s.sigs, b[0])
		s.kick()
	}
}

// SetTTY makes s the session of a process with a terminal of size ws.
// Every holder stream is sent the latest size, so that one lost with a
// move's pipe is given again, and a size the pty already has changes
// nothing.
func (s *Session) SetTTY(ws jobns.Winsize) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tty = true
	s.ws, s.wsGen = ws.Bytes(), s.wsGen+1
}

// takeWinsize keeps the caller's new window size for the holders.
func (s *Session) takeWinsize(b []byte) {
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
func (s *Session) hangUp(c *wire.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tty && s.client == c && !s.ended && len(s.sigs) < maxSigs {
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
func (s *Session) cutOff(c *wire.Conn) {
	s.hangUp(c)
	s.mu.Lock()
	granted := s.granted
	s.mu.Unlock()
	s.log.Warn("stdio: the caller sent stdin past its credit: ending its stream", "cpid", s.cpid, "credit", granted)
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
func (s *Session) credit(c *wire.Conn) {
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

// grant raises the caller's credit to maxIn past what the holders have
// written, once that adds a good part of it, or the holders have
// written all (so a caller that sends a little at a time never waits);
// s.mu is held.
func (s *Session) grant() {
	limit := s.inAt + maxIn
	if limit > s.granted && (len(s.in) == 0 || limit-s.granted >= maxIn/4) {
		s.granted = limit
		s.more.Broadcast()
	}
}

// kick wakes the current stream's sender; s.mu is held.
func (s *Session) kick() {
	if s.cur != nil {
		s.cur.kick()
	}
}

// end passes the exit to the caller and forgets the session.
func (s *Session) end(exit []byte) {
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
	s.t.forget(s)
	close(s.done)
}

// watch ends the session, with an error for the caller, once the agreed
// state has not listed the process, and no holder has been attached, for
// tm.lostGrace: its node died (or cannot reach us) before its holder
// reported the exit. The caller never waits for ever; a holder still
// passing output on, however slowly, is left alone.
func (s *Session) watch() {
	t := time.NewTicker(s.tm.watch)
	defer t.Stop()
	var since time.Time
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		listed, code := s.t.listed(s.cpid)
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
func (s *Session) lose(code *int) {
	exit := wire.ExitInfo{Code: 255}
	if code != nil {
		exit.Code = *code
	}
	s.log.Warn("stdio: the process ended without its holder reporting", "cpid", s.cpid, "code", exit.Code)
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
