package cluster

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
// moves, the old holder detaches (what it holds travels in a stdioState)
// and a new holder on the destination attaches; the caller never notices.
//
// The stream between a holder and the session (the migration port,
// streamHeader kind "stdio") may be refused, break or be replaced at any
// moment: a move closes it, and the next holder may reach the session
// before or after the session sees the old stream end. Nothing is lost
// or repeated because both directions are counted from the start of the
// process, over every holder it has had:
//
//   - The holder speaks first (frHeader, stdioHello): its epoch, one more
//     per move, so that a late stream of a holder that has left is
//     refused; the stdin bytes and signals it has received; whether it
//     has the EOF. Nothing flows before both hellos, so a stream that its
//     holder drops at once (a detach began while it dialled) takes
//     nothing with it.
//   - The session answers (frHeader, stdioHello) with where stdin resumes
//     and how much output it has passed to the caller, or closes the
//     stream: it has no such process, or it has seen a newer holder.
//   - Then the session sends stdin, signals and the EOF from the holder's
//     counts on, and the holder sends output from the session's count
//     on. Each stdin and output frame says the offset of its first byte
//     (withAt) and the far side keeps only what it lacks, so a resend, or
//     an old stream read late, never shifts the count.
//   - Each side acknowledges what it has (frAck, stdioAck): the holder
//     the stdin it wrote to the process and the signals it got, the
//     session the output it passed on. Each keeps what is not
//     acknowledged and sends it again on the next stream.
//   - What each side keeps is bounded: a session with no room stops
//     reading its caller (backpressure), a holder with no room stops
//     reading the process's output, as a terminal would.
//   - frAck is also the keepalive: a stream that hears nothing for
//     stdioTiming.idle is dead, and every write has that deadline.
//   - The holder ends with frExit after the last output; the session
//     passes it on and answers frExit: the holder may go.

const (
	// stdioMaxIn bounds the stdin (and signals) a session keeps for its
	// process; a holder's queue is bounded by what the session sends.
	stdioMaxIn = 256 << 10
	// stdioMaxOut bounds the output a holder keeps until the session has
	// acknowledged it.
	stdioMaxOut = 256 << 10
	// stdioOutWindow bounds the output in flight, so that a stalled
	// caller never blocks a holder's writes (and its keepalives).
	stdioOutWindow = 64 << 10
	// stdioChunk is the most bytes one stdin or output frame carries.
	stdioChunk = 32 << 10
)

// stdioTiming bounds every wait of the relay; tests shorten it.
type stdioTiming struct {
	keepalive time.Duration // a quiet stream sends frAck this often
	idle      time.Duration // a stream silent this long is dead; each write's deadline
	dial      time.Duration // to open a stream to the session
	backoff   time.Duration // the longest pause between attempts to reach the session
	orphan    time.Duration // no session took the holder for this long: output with no room is dropped
	exitWait  time.Duration // an ended process's holder tries this long to report the exit
	stop      time.Duration // a detach waits this long for the stdin writer and the output pumps
	watch     time.Duration // a session checks this often that its process still exists
	lostGrace time.Duration // gone from the agreed state this long with no exit: the session ends
}

var defaultStdioTiming = stdioTiming{
	keepalive: 5 * time.Second, idle: 20 * time.Second, dial: 5 * time.Second, backoff: 5 * time.Second,
	orphan: 30 * time.Second, exitWait: 30 * time.Second, stop: 5 * time.Second,
	watch: 5 * time.Second, lostGrace: 15 * time.Second,
}

// stdioHello opens a holder's stream, from each side.
type stdioHello struct {
	Epoch int    `json:"epoch,omitempty"` // holder: one more per move
	In    uint64 `json:"in"`              // stdin bytes the holder has received / where the session resumes
	Sig   int    `json:"sig"`             // signals, likewise
	EOF   bool   `json:"eof,omitempty"`   // holder: it has the EOF
	Out   uint64 `json:"out"`             // session: output bytes it has passed on
}

// stdioAck says how far a side has got.
type stdioAck struct {
	In  uint64 `json:"in,omitempty"`  // holder: stdin bytes written to the process
	Sig int    `json:"sig,omitempty"` // holder: signals received
	Out uint64 `json:"out,omitempty"` // session: output bytes passed on
}

// frame is one frame to send.
type frame struct {
	typ byte
	b   []byte
}

// session is the home node's end of one attached process.
type session struct {
	a    *Agent
	cpid int
	tm   stdioTiming
	// check reports whether the agreed state still lists the process,
	// and if not, its exit code where known.
	check func() (listed bool, code *int)

	mu     sync.Mutex // protects the fields below
	room   *sync.Cond // in or sigs shrank, or the session ended
	client *frameConn // nil once the caller hung up
	in     []byte     // the caller's stdin from offset inAt on, not yet written by any holder
	inAt   uint64
	eof    bool   // the caller's stdin ended, or the caller left
	sigs   []byte // the caller's signals from number sigAt on, not yet acknowledged
	sigAt  int
	out    uint64 // output bytes passed to the caller (or dropped once it left)
	epoch  int    // the newest holder's
	cur    *sstream
	done   chan struct{}
	ended  bool

	relay sync.Mutex // output reaches the caller from one stream at a time, in order
}

// sstream is the session's end of one holder stream.
type sstream struct {
	fc   *frameConn
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
	outAck  uint64 // output count last acknowledged
	exitAck bool   // the exit reached the caller: answer it, then stop
}

// newSession registers the session of an attached process started here.
func (a *Agent) newSession(cpid int, client *frameConn) *session {
	return a.openSession(cpid, client, defaultStdioTiming, nil)
}

// openSession registers a session; check nil asks the agreed state.
func (a *Agent) openSession(cpid int, client *frameConn, tm stdioTiming, check func() (bool, *int)) *session {
	s := &session{a: a, cpid: cpid, tm: tm, check: check, client: client, done: make(chan struct{})}
	s.room = sync.NewCond(&s.mu)
	if s.check == nil {
		s.check = s.listed
	}
	a.jobsMu.Lock()
	a.sessions[cpid] = s
	a.jobsMu.Unlock()
	go s.watch()
	return s
}

// fromClient relays the caller's frames until it hangs up. A caller that
// goes away closes the process's stdin.
func (s *session) fromClient(c *frameConn) {
	for {
		typ, b, err := c.recv()
		if err != nil {
			s.mu.Lock()
			s.eof, s.client = true, nil
			s.kick()
			s.mu.Unlock()
			return
		}
		switch typ {
		case frStdin, frSignal:
			s.take(typ, b)
		case frEOF:
			s.mu.Lock()
			s.eof = true
			s.kick()
			s.mu.Unlock()
		}
	}
}

// take keeps stdin or a signal for the holders. With no room it waits,
// and the caller is not read meanwhile: that is its backpressure. The
// wait ends when a holder writes to the process or the process ends.
func (s *session) take(typ byte, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for !s.ended && len(s.in)+len(s.sigs) >= stdioMaxIn {
		s.room.Wait()
	}
	switch {
	case s.ended:
	case typ == frStdin && !s.eof:
		s.in = append(s.in, b...)
	case typ == frSignal && len(b) == 1:
		s.sigs = append(s.sigs, b[0])
	}
	s.kick()
}

// kick wakes the current stream's sender; s.mu is held.
func (s *session) kick() {
	if s.cur != nil {
		s.cur.kick()
	}
}

// serveHolder runs one holder's stream until it ends.
func (s *session) serveHolder(fc *frameConn) {
	st := &sstream{fc: fc, wake: make(chan struct{}, 1), gone: make(chan struct{})}
	st.conn, _ = fc.rw.(net.Conn)
	defer st.close()
	st.deadline(true, s.tm.idle)
	var h stdioHello
	if err := fc.expect(frHeader, &h); err != nil {
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
		typ, b, err := st.fc.recv()
		if err != nil {
			return false
		}
		switch typ {
		case frStdout, frStderr:
			s.relayOut(st, typ, b)
		case frAck:
			var k stdioAck
			if json.Unmarshal(b, &k) == nil {
				s.acked(k)
			}
		case frExit:
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
func (s *session) relayOut(st *sstream, typ byte, payload []byte) {
	at, b, ok := splitAt(payload)
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
		_ = c.send(typ, b)
	}
	s.mu.Lock()
	s.out += uint64(len(b))
	st.kick()
	s.mu.Unlock()
}

// acked forgets what a holder has written to the process.
func (s *session) acked(k stdioAck) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k.In > s.inAt {
		n := min(k.In-s.inAt, uint64(len(s.in)))
		s.in, s.inAt = s.in[n:], s.inAt+n
		if len(s.in) == 0 {
			s.in = nil
		}
	}
	if k.Sig > s.sigAt {
		n := min(k.Sig-s.sigAt, len(s.sigs))
		s.sigs, s.sigAt = s.sigs[n:], s.sigAt+n
	}
	s.room.Broadcast()
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
		fs = append(fs, frame{frHeader, b})
	}
	if st.exitAck {
		return append(fs, frame{typ: frExit}), true
	}
	if s.cur == st {
		fs = s.input(st, fs)
	}
	if s.out > st.outAck || quiet {
		st.outAck = s.out
		b, _ := json.Marshal(stdioAck{Out: s.out})
		fs = append(fs, frame{frAck, b})
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
		fs = append(fs, frame{frStdin, withAt(st.inSent, b)})
		st.inSent += uint64(len(b))
	}
	for ; st.sigSent < s.sigAt+len(s.sigs); st.sigSent++ {
		fs = append(fs, frame{frSignal, []byte{s.sigs[st.sigSent-s.sigAt]}})
	}
	if s.eof && !st.eofSent && st.inSent == end {
		st.eofSent = true
		fs = append(fs, frame{typ: frEOF})
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
	return st.fc.send(f.typ, f.b)
}

// close ends the stream; its reader and sender return.
func (st *sstream) close() {
	st.once.Do(func() {
		close(st.gone)
		if c, ok := st.fc.rw.(io.Closer); ok {
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
	s.room.Broadcast()
	s.mu.Unlock()
	if c != nil {
		s.relay.Lock() // after the output being passed on
		_ = c.send(frExit, exit)
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
	exit := exitInfo{Code: 255}
	if code != nil {
		exit.Code = *code
	}
	s.a.log.Warn("stdio: the process ended without its holder reporting", "cpid", s.cpid, "code", exit.Code)
	s.mu.Lock()
	c := s.client
	s.mu.Unlock()
	if c != nil {
		s.relay.Lock()
		_ = c.send(frStderr, []byte(fmt.Sprintf("ssi: process %d ended; the end of its output was lost with its node\n", s.cpid)))
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

// stdioState is what a detached holder hands to the next one (or back to
// itself when the move fails).
type stdioState struct {
	Pending []byte `json:"pending,omitempty"` // stdin not yet read by the process; it ends at In
	EOF     bool   `json:"eof,omitempty"`
	Signals []int  `json:"signals,omitempty"` // to deliver once the process runs
	Epoch   int    `json:"epoch,omitempty"`   // of the holder that left it
	In      uint64 `json:"in,omitempty"`      // stdin bytes received from the session, every holder so far
	Sig     int    `json:"sig,omitempty"`     // signals received, likewise
	Gone    bool   `json:"gone,omitempty"`    // the process closed its stdin
	// Output the session may not have yet, from offset OutAt on.
	OutAt uint64     `json:"out_at,omitempty"`
	Out   []outChunk `json:"out,omitempty"`
	// piped: the first piped bytes of Pending are still in the stdin pipe
	// of the holder that left it (a detach only looks); resume skips them.
	piped int
}

// outChunk is output of one stream.
type outChunk struct {
	Err bool   `json:"err,omitempty"` // stderr
	B   []byte `json:"b"`
}

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
	exit    []byte        // exitInfo, once the process ended
	told    bool          // the session passed the exit on
	exitAck chan struct{} // closed then
	quit    chan struct{} // closed by close
	pumps   sync.WaitGroup
}

// hlink is the holder's end of one stream.
type hlink struct {
	fc   *frameConn
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
func (a *Agent) newHolder(cpid int, home string, stdinW, stdinR, stdoutR, stderrR *os.File, st *stdioState) *holder {
	h := &holder{a: a, cpid: cpid, home: home, tm: defaultStdioTiming, stdinW: stdinW, stdinR: stdinR,
		stdoutR: stdoutR, stderrR: stderrR, epoch: 1, unheard: time.Now(),
		exitAck: make(chan struct{}), quit: make(chan struct{})}
	h.cond = sync.NewCond(&h.mu)
	h.connect = h.dial
	if st != nil {
		h.restore(st)
		h.epoch = st.Epoch + 1
	}
	return h
}

// restore takes st over; h.mu is held (or h is new).
func (h *holder) restore(st *stdioState) {
	h.queue = append([]byte(nil), st.Pending[min(st.piped, len(st.Pending)):]...)
	h.in = max(st.In, uint64(len(st.Pending)))
	h.eof, h.gone, h.sig = st.EOF, st.Gone, st.Sig
	h.signals = append(h.signals, st.Signals...)
	h.out, h.outAt, h.outLen = st.Out, st.OutAt, 0
	for _, c := range h.out {
		h.outLen += len(c.B)
	}
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
	l := &hlink{fc: newFrameConn(conn), conn: conn, wake: make(chan struct{}, 1)}
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
	if err := newFrameConn(conn).sendJSON(frHeader, streamHeader{Kind: "stdio", CPID: h.cpid}); err != nil {
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
		typ, b, err := l.fc.recv()
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
func (h *holder) apply(l *hlink, typ byte, b []byte) (sig int, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.link != l || (!l.ready && typ != frHeader) {
		return 0, false
	}
	switch typ {
	case frHeader:
		var m stdioHello
		if json.Unmarshal(b, &m) != nil {
			return 0, false
		}
		h.hello(l, m)
	case frStdin:
		at, b, ok := splitAt(b)
		if !ok {
			return 0, false
		}
		h.takeIn(at, b)
	case frEOF:
		h.eof = true
	case frSignal:
		if len(b) == 1 {
			h.sig++
			sig = int(b[0])
		}
	case frAck:
		var k stdioAck
		if json.Unmarshal(b, &k) == nil {
			h.trimOut(k.Out)
		}
	case frExit:
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
			if err := l.fc.send(f.typ, f.b); err != nil {
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
		return []frame{{frHeader, b}}, true
	}
	if !l.ready {
		return nil, true
	}
	l.outSent = max(l.outSent, h.outAt)
	at, window := h.outAt, h.outAt+stdioOutWindow
	for _, c := range h.out {
		end := at + uint64(len(c.B))
		if upTo := min(end, window); l.outSent < upTo {
			typ := byte(frStdout)
			if c.Err {
				typ = frStderr
			}
			fs = append(fs, frame{typ, withAt(l.outSent, c.B[l.outSent-at:upTo-at])})
			l.outSent = upTo
		}
		at = end
	}
	written := h.in - min(h.in, uint64(len(h.queue)))
	if written > l.inAck || h.sig > l.sigAck || quiet {
		l.inAck, l.sigAck = written, h.sig
		b, _ := json.Marshal(stdioAck{In: written, Sig: h.sig})
		fs = append(fs, frame{frAck, b})
	}
	if h.exit != nil && !h.told && !l.exitSent && l.outSent == at {
		l.exitSent = true
		fs = append(fs, frame{frExit, h.exit})
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

// detach is called with the process frozen: it stops the stream and the
// stdin writer, keeps what the process wrote, and reads back (without
// taking it) the stdin the process has not read. It waits for nobody
// but its own goroutines: the session sends what it holds, from the
// counts in the state, to whichever holder comes next. The holder can
// then be resumed or closed.
func (h *holder) detach(ctx context.Context) (*stdioState, error) {
	l, err := h.pause(ctx)
	if l != nil {
		l.conn.Close()
	}
	if perr := h.stopPumps(); err == nil {
		err = perr
	}
	for _, p := range []struct {
		f      *os.File
		stderr bool
	}{{h.stdoutR, false}, {h.stderrR, true}} {
		if err != nil {
			break
		}
		// What the pumps have not read is still in the pipe.
		var b []byte
		b, err = drain(p.f)
		h.addOut(p.stderr, b)
		if err != nil {
			err = fmt.Errorf("draining output: %w", err)
		}
	}
	var inPipe []byte
	if err == nil {
		if inPipe, err = peek(h.stdinR); err != nil {
			err = fmt.Errorf("reading back stdin: %w", err)
		}
	}
	h.mu.Lock()
	st := &stdioState{Epoch: h.epoch, Pending: append(inPipe, h.queue...), piped: len(inPipe), EOF: h.eof,
		Gone: h.gone, In: h.in, Sig: h.sig, Signals: h.signals, OutAt: h.outAt, Out: h.out}
	h.queue, h.signals, h.out, h.outLen = nil, nil, nil, 0
	h.mu.Unlock()
	if err != nil {
		// The move will not happen: run on here as before.
		h.resume(st)
		return nil, err
	}
	return st, nil
}

// pause stops the stream and the stdin writer; it returns the stream
// that ran.
func (h *holder) pause(ctx context.Context) (*hlink, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.paused = true
	l := h.link
	h.link = nil
	if l != nil && l.ready {
		h.unheard = time.Now()
	}
	h.cond.Broadcast()
	_ = h.stdinW.SetWriteDeadline(time.Now())
	deadline := time.Now().Add(h.tm.stop)
	for h.writing && ctx.Err() == nil && time.Now().Before(deadline) {
		h.waitFor(time.Until(deadline))
	}
	_ = h.stdinW.SetWriteDeadline(time.Time{})
	if h.writing {
		return l, errors.New("the stdin writer does not stop")
	}
	return l, nil
}

// stopPumps ends the output pumps: their reads end at once, and one
// waiting for room sees the pause.
func (h *holder) stopPumps() error {
	_ = h.stdoutR.SetReadDeadline(time.Now())
	_ = h.stderrR.SetReadDeadline(time.Now())
	stopped := make(chan struct{})
	go func() {
		h.pumps.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
		return nil
	case <-time.After(h.tm.stop):
		return errors.New("the output pumps do not stop")
	}
}

// resume undoes a detach: the move failed, the process runs here again.
func (h *holder) resume(st *stdioState) {
	h.mu.Lock()
	h.restore(st)
	h.paused = false
	h.cond.Broadcast()
	h.mu.Unlock()
	h.run()
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
	b, _ := json.Marshal(exitInfo{Code: code})
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
	for _, f := range []*os.File{h.stdinW, h.stdinR, h.stdoutR, h.stderrR} {
		_ = f.Close()
	}
}

// withAt is the payload of a data frame on a holder's stream: the
// offset of its first byte (big-endian uint64), then the bytes.
func withAt(at uint64, b []byte) []byte {
	p := make([]byte, 8+len(b))
	binary.BigEndian.PutUint64(p, at)
	copy(p[8:], b)
	return p
}

func splitAt(p []byte) (uint64, []byte, bool) {
	if len(p) < 8 {
		return 0, nil, false
	}
	return binary.BigEndian.Uint64(p), p[8:], true
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

// peek copies what a pipe holds now and leaves it there (tee(2) into a
// pipe of ours), so that a move that fails leaves the process's stdin as
// it was, even once its EOF was given.
func peek(f *os.File) ([]byte, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var out []byte
	var perr error
	if err := rc.Control(func(fd uintptr) { out, perr = peekFD(int(fd)) }); err != nil {
		return nil, err
	}
	return out, perr
}

func peekFD(fd int) ([]byte, error) {
	n, err := unix.IoctlGetInt(fd, unix.TIOCINQ) // FIONREAD
	if err != nil || n == 0 {
		return nil, err
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	// tee copies the pipe's buffers as they are: ours needs as many.
	size, err := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return nil, err
	}
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, max(size, n)); err != nil {
		return nil, err
	}
	got, err := unix.Tee(fd, p[1], n, unix.SPLICE_F_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if int(got) != n {
		return nil, fmt.Errorf("copied %d of the %d bytes in the pipe", got, n)
	}
	out := make([]byte, n)
	for read := 0; read < n; {
		k, err := unix.Read(p[0], out[read:])
		if err != nil {
			return nil, err
		}
		read += k
	}
	return out, nil
}
