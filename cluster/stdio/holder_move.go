package stdio

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

// The hand-off of a move: a holder's detach, and what the next holder
// (or the same one, resumed) takes over.

// Detach is called with the process frozen: it stops the stream and the
// stdin writer, keeps what the process wrote, and reads back (without
// taking it) the stdin the process has not read. It waits for nobody
// but its own goroutines: the session sends what it holds, from the
// counts in the state, to whichever holder comes next. The holder can
// then be resumed or closed.
func (h *Holder) Detach(ctx context.Context) (*State, error) {
	l, err := h.pause(ctx)
	if l != nil {
		l.conn.Close()
	}
	if !h.pumps.stop(h.tm.stop) && err == nil {
		err = errors.New("the output pumps do not stop")
	}
	for _, p := range []struct {
		f      *os.File
		stderr bool
	}{{h.p.StdoutR, false}, {h.p.StderrR, true}} {
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
		if inPipe, err = peek(h.p.StdinR); err != nil {
			err = fmt.Errorf("reading back stdin: %w", err)
		}
	}
	h.mu.Lock()
	st := &State{Epoch: h.epoch, Pending: append(inPipe, h.queue...), piped: len(inPipe), EOF: h.eof,
		Gone: h.gone, In: h.in, Sig: h.sig, Signals: h.signals, OutAt: h.outAt, Out: h.out}
	h.queue, h.signals, h.out, h.outLen = nil, nil, nil, 0
	h.mu.Unlock()
	if err != nil {
		// The move will not happen: run on here as before.
		h.Resume(st)
		return nil, err
	}
	return st, nil
}

// pause stops the stream and the stdin writer; it returns the stream
// that ran.
func (h *Holder) pause(ctx context.Context) (*hlink, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.paused = true
	l := h.link
	h.link = nil
	if l != nil && l.ready {
		h.unheard = time.Now()
	}
	h.cond.Broadcast()
	_ = h.p.StdinW.SetWriteDeadline(time.Now())
	deadline := time.Now().Add(h.tm.stop)
	for h.writing && ctx.Err() == nil && time.Now().Before(deadline) {
		h.waitFor(time.Until(deadline))
	}
	_ = h.p.StdinW.SetWriteDeadline(time.Time{})
	if h.writing {
		return l, errors.New("the stdin writer does not stop")
	}
	return l, nil
}

// Resume undoes a Detach that handed out st: the move failed, the
// process runs here again.
func (h *Holder) Resume(st *State) {
	h.mu.Lock()
	h.restore(st)
	h.paused = false
	h.cond.Broadcast()
	h.mu.Unlock()
	h.run()
}

// restore takes st over; h.mu is held (or h is new).
func (h *Holder) restore(st *State) {
	h.queue = append([]byte(nil), st.Pending[min(st.piped, len(st.Pending)):]...)
	h.in = max(st.In, uint64(len(st.Pending)))
	h.eof, h.gone, h.sig = st.EOF, st.Gone, st.Sig
	h.signals = append(h.signals, st.Signals...)
	h.out, h.outAt, h.outLen = st.Out, st.OutAt, 0
	for _, c := range h.out {
		h.outLen += len(c.B)
	}
}
