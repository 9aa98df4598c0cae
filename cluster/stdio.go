package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"ssi/cluster/jobns"
	"ssi/cluster/wire"
)

// Attached stdio. The caller of `ssi run` talks to its own agent (the
// process's home): a session there relays frames between the caller and
// a holder, which lives on the node where the process runs and holds our
// ends of the process's stdin, stdout and stderr pipes. When the process
// moves, the old holder detaches (what it holds travels in a stdioState)
// and a new holder on the destination attaches; the caller never notices.
//
// The stream between a holder and the session (the migration port,
// wire.StreamHeader kind "stdio") may be refused, break or be replaced at any
// moment: a move closes it, and the next holder may reach the session
// before or after the session sees the old stream end. Nothing is lost
// or repeated because both directions are counted from the start of the
// process, over every holder it has had:
//
//   - The holder speaks first (wire.FrHeader, stdioHello): its epoch, one more
//     per move, so that a late stream of a holder that has left is
//     refused; the stdin bytes and signals it has received; whether it
//     has the EOF. Nothing flows before both hellos, so a stream that its
//     holder drops at once (a detach began while it dialled) takes
//     nothing with it.
//   - The session answers (wire.FrHeader, stdioHello) with where stdin resumes
//     and how much output it has passed to the caller, or closes the
//     stream: it has no such process, or it has seen a newer holder.
//   - Then the session sends stdin, signals and the EOF from the holder's
//     counts on, and the holder sends output from the session's count
//     on. Each stdin and output frame says the offset of its first byte
//     (withAt) and the far side keeps only what it lacks, so a resend, or
//     an old stream read late, never shifts the count.
//   - Each side acknowledges what it has (wire.FrAck, stdioAck): the holder
//     the stdin it wrote to the process and the signals it got, the
//     session the output it passed on. Each keeps what is not
//     acknowledged and sends it again on the next stream.
//   - What each side keeps is bounded. The caller sends stdin only
//     within the credit its session grants (wire.FrCredit): stdioMaxIn past
//     what the holders have acknowledged writing, so the session keeps
//     at most that much and never stops reading its caller, and a
//     signal never waits behind stdin. A caller that sends past its
//     credit is cut off (wire.FrError) and its stream closed. A holder with
//     no room stops reading the process's output, as a terminal would.
//   - wire.FrAck is also the keepalive: a stream that hears nothing for
//     stdioTiming.idle is dead, and every write has that deadline.
//   - A process with a terminal of its own (ssi run -t) has a fourth
//     pipe, for its window size: the caller sends wire.FrWinsize when its
//     terminal's size changes, the session keeps the latest and sends it
//     once to every holder stream (so a new holder gets it even if a
//     move lost it), the holder writes it to the pipe and the process's
//     init sets it on the pty. Its stdin and stdout are the pty's, so
//     ^C is a byte like any other; a caller that hangs up sends the
//     process SIGHUP.
//   - The holder ends with wire.FrExit after the last output; the session
//     passes it on and answers wire.FrExit: the holder may go.

const (
	// stdioMaxIn bounds the stdin a session keeps for its process: the
	// caller's credit runs this far past what the holders have written.
	// A holder's queue is bounded by what the session sends.
	stdioMaxIn = 256 << 10
	// stdioMaxSigs bounds the signals a session keeps until a holder has
	// them. Signals need no credit; past this many waiting (no holder
	// takes them), one more is dropped and logged rather than kept.
	stdioMaxSigs = 4096
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
	keepalive time.Duration // a quiet stream sends wire.FrAck this often
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
	typ wire.Frame
	b   []byte
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

// The hand-off of a move: a holder's detach, and what the next holder
// (or the same one, resumed) takes over, with the pipe helpers it uses.

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

// Resize tells the process with a terminal of its own (RunRequest.TTY)
// that the caller's terminal has a new size; for any other it is
// ignored. It lives here, not with Attached, as part of the relay's
// protocol.
func (at *Attached) Resize(ws jobns.Winsize) error {
	return at.fc.Send(wire.FrWinsize, ws.Bytes())
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
