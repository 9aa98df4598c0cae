package stdio

import (
	"encoding/json"
	"io"
	"net"
	"sync"
	"time"

	"ssi/cluster/wire"
)

// sstream is the session's end of one holder stream.
type sstream struct {
	fc   *wire.Conn
	conn net.Conn // fc's, for deadlines and closing; nil if it is none
	wake chan struct{}
	gone chan struct{}
	once sync.Once

	// Protected by the session's mu.
	hello   helloMsg // ours, sent first
	said    bool     // hello sent
	inSent  uint64
	sigSent int
	eofSent bool
	wsGen   int    // the window size sent is the session's wsGen'th
	outAck  uint64 // output count last acknowledged
	exitAck bool   // the exit reached the caller: answer it, then stop
}

// ServeHolder runs one holder's stream until it ends: fc is a stream on
// the migration port whose header named s's process.
func (s *Session) ServeHolder(fc *wire.Conn) {
	st := &sstream{fc: fc, wake: make(chan struct{}, 1), gone: make(chan struct{})}
	st.conn, _ = fc.Stream().(net.Conn)
	defer st.close()
	st.deadline(true, s.tm.idle)
	var h helloMsg
	if err := fc.Expect(wire.FrHeader, &h); err != nil {
		s.log.Debug("stdio: a holder left before its hello", "cpid", s.cpid, "err", err)
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
func (s *Session) accept(st *sstream, h helloMsg) bool {
	s.mu.Lock()
	end, sigEnd := s.inAt+uint64(len(s.in)), s.sigAt+len(s.sigs)
	if newest := s.epoch; s.ended || h.Epoch < newest || h.In > end || h.Sig > sigEnd {
		s.mu.Unlock()
		s.log.Info("stdio: refusing a holder", "cpid", s.cpid, "epoch", h.Epoch, "newest", newest)
		return false
	}
	if h.In < s.inAt || h.Sig < s.sigAt {
		// Written to the process by another holder, yet this one lacks it:
		// a state was lost. Going on from here is all that is left.
		s.log.Warn("stdio: a holder lacks input already written", "cpid", s.cpid, "has", h.In, "written", s.inAt)
	}
	st.inSent, st.sigSent, st.eofSent = max(h.In, s.inAt), max(h.Sig, s.sigAt), h.EOF
	st.outAck = s.out
	st.hello = helloMsg{In: st.inSent, Sig: st.sigSent, Out: s.out}
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
func (s *Session) read(st *sstream) bool {
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
			var k ackMsg
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
func (s *Session) relayOut(st *sstream, typ wire.Frame, payload []byte) {
	at, b, ok := wire.SplitAt(payload)
	if !ok {
		return
	}
	s.relay.Lock()
	defer s.relay.Unlock()
	s.mu.Lock()
	if at > s.out {
		s.log.Warn("stdio: output missing", "cpid", s.cpid, "bytes", at-s.out)
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
func (s *Session) acked(k ackMsg) {
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
func (s *Session) send(st *sstream) {
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
func (s *Session) next(st *sstream, quiet bool) (fs []frame, last bool) {
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
		b, _ := json.Marshal(ackMsg{Out: s.out})
		fs = append(fs, frame{wire.FrAck, b})
	}
	return fs, false
}

// input adds the stdin, signals and EOF that st has not sent yet, a
// bounded amount per round; s.mu is held.
func (s *Session) input(st *sstream, fs []frame) []frame {
	st.inSent, st.sigSent = max(st.inSent, s.inAt), max(st.sigSent, s.sigAt)
	end := s.inAt + uint64(len(s.in))
	for n := 0; st.inSent < end && n < 8; n++ {
		b := s.in[st.inSent-s.inAt:]
		b = b[:min(len(b), maxChunk)]
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
