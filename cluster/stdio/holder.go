package stdio

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"ssi/cluster/wire"
)

// Holder is the running node's end of an attached process's stdio.
type Holder struct {
	cpid int
	home string // node whose session the holder feeds
	pid  func() int
	tm   Timing
	log  *slog.Logger
	dial Dialer
	// connect opens a stream to the session (connectSession, unless a
	// test says).
	connect func(ctx context.Context) (net.Conn, error)

	p     *Pipes
	pumps pumps

	mu      sync.Mutex // protects the fields below
	cond    *sync.Cond // any change of them
	epoch   int
	queue   []byte // stdin waiting to be written; it ends at offset in
	in      uint64
	eof     bool // close stdin once queue is written
	gone    bool // the process's stdin is closed: input is discarded
	sig     int  // signals received
	signals []int
	out     []OutChunk // output the session has not acknowledged, from offset outAt
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
	quit    chan struct{} // closed by Close
}

// NewHolder takes p, our ends of the pipes of process cpid, for its
// session on node home, which dial reaches; pid says the process's pid
// here (its signals go there). st is what a previous holder left (nil
// for a new process). Start runs it.
func NewHolder(cpid int, home string, pid func() int, p *Pipes, st *State, dial Dialer, log *slog.Logger) *Holder {
	h := &Holder{cpid: cpid, home: home, pid: pid, tm: DefaultTiming, log: log, dial: dial, p: p, epoch: 1,
		unheard: time.Now(), exitAck: make(chan struct{}), quit: make(chan struct{})}
	h.cond = sync.NewCond(&h.mu)
	h.pumps = pumps{stdout: p.StdoutR, stderr: p.StderrR, keep: h.addOut}
	h.connect = h.connectSession
	if st != nil {
		h.restore(st)
		h.epoch = st.Epoch + 1
	}
	return h
}

// HasTTY reports whether the process has a terminal of its own: the
// holder has its window size pipe.
func (h *Holder) HasTTY() bool { return h.p.WinW != nil }

// Start runs the holder: pumps, the stdin writer and the session link.
func (h *Holder) Start() {
	go h.writer()
	h.run()
}

// run (re)starts relaying: output pumps, the session link, and the
// signals that arrived while the process was frozen.
func (h *Holder) run() {
	h.pumps.start()
	go h.keepLinked()
	h.mu.Lock()
	sigs := h.signals
	h.signals = nil
	h.mu.Unlock()
	for _, s := range sigs {
		h.signal(s)
	}
}

// addOut keeps output until the session has it. With no room it waits
// for the session, and the process blocks on its writes as it would on a
// terminal's; a holder that no session has taken for tm.orphan drops
// instead (its caller is gone), so that the process goes on.
func (h *Holder) addOut(stderr bool, b []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.outLen >= maxOut && !h.paused && !h.closed {
		if h.unheard.IsZero() {
			h.cond.Wait()
			continue
		}
		if left := h.tm.orphan - time.Since(h.unheard); left > 0 {
			h.waitFor(left)
			continue
		}
		if h.dropped == 0 {
			h.log.Warn("stdio: no session takes the output: dropping it", "cpid", h.cpid)
		}
		h.dropped += len(b)
		return
	}
	if h.closed || len(b) == 0 {
		return
	}
	if k := len(h.out) - 1; k >= 0 && h.out[k].Err == stderr && len(h.out[k].B) < maxChunk {
		h.out[k].B = append(h.out[k].B, b...)
	} else {
		h.out = append(h.out, OutChunk{Err: stderr, B: append([]byte(nil), b...)})
	}
	h.outLen += len(b)
	h.poke()
}

// writer writes queued stdin to the process.
func (h *Holder) writer() {
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
			_ = h.p.StdinW.Close()
			return
		}
		chunk := h.queue
		h.writing = true
		h.mu.Unlock()
		n, err := h.p.StdinW.Write(chunk)
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

// poke wakes the stream's sender; h.mu is held.
func (h *Holder) poke() {
	if h.link != nil {
		select {
		case h.link.wake <- struct{}{}:
		default:
		}
	}
}

// waitFor is cond.Wait for at most d; h.mu is held.
func (h *Holder) waitFor(d time.Duration) {
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
func (h *Holder) signal(sig int) {
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

// Finish waits for the output to end (the process exited with code),
// then tells the session how it ended, and closes the holder once the
// session has passed that on, or after tm.exitWait.
func (h *Holder) Finish(code int) {
	if !h.pumps.wait(h.tm.exitWait) {
		h.log.Warn("stdio: the process's output did not end", "cpid", h.cpid)
	}
	b, _ := json.Marshal(wire.ExitInfo{Code: code})
	h.mu.Lock()
	h.exit = b
	h.poke()
	h.mu.Unlock()
	select {
	case <-h.exitAck:
	case <-time.After(h.tm.exitWait):
		h.log.Warn("stdio: the caller's node did not take the exit", "cpid", h.cpid)
	}
	h.Close()
}

// Close releases the pipes and the link.
func (h *Holder) Close() {
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
	h.p.Close()
}
