package stdio

import (
	"context"
	"net"
	"time"

	"ssi/cluster/wire"
)

const (
	// maxIn bounds the stdin a session keeps for its process: the
	// caller's credit runs this far past what the holders have written.
	// It bounds a holder's queue too, since the session sends no more
	// than the credit; a holder refuses a stream that sends past it.
	maxIn = 256 << 10
	// maxSigs bounds the signals a session keeps until a holder has
	// them. Signals need no credit; past this many waiting (no holder
	// takes them), one more is dropped and logged rather than kept.
	maxSigs = 4096
	// maxOut bounds the output a holder keeps until the session has
	// acknowledged it.
	maxOut = 256 << 10
	// outWindow bounds the output in flight, so that a stalled
	// caller never blocks a holder's writes (and its keepalives).
	outWindow = 64 << 10
	// maxChunk is the most bytes one stdin or output frame carries.
	maxChunk = 32 << 10
)

// Timing bounds every wait of the relay; tests shorten it.
type Timing struct {
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

// DefaultTiming is the relay's Timing outside tests: every holder and
// session starts with it.
var DefaultTiming = Timing{
	keepalive: 5 * time.Second, idle: 20 * time.Second, dial: 5 * time.Second, backoff: 5 * time.Second,
	orphan: 30 * time.Second, exitWait: 30 * time.Second, stop: 5 * time.Second,
	watch: 5 * time.Second, lostGrace: 15 * time.Second,
}

// Dialer opens a stream on the migration port of node (for a holder to
// reach its session). The holder sends the stream's header itself.
type Dialer func(ctx context.Context, node string) (net.Conn, error)

// helloMsg opens a holder's stream, from each side.
type helloMsg struct {
	Epoch int    `json:"epoch,omitempty"` // holder: one more per move
	In    uint64 `json:"in"`              // stdin bytes the holder has received / where the session resumes
	Sig   int    `json:"sig"`             // signals, likewise
	EOF   bool   `json:"eof,omitempty"`   // holder: it has the EOF
	Out   uint64 `json:"out"`             // session: output bytes it has passed on
}

// ackMsg says how far a side has got.
type ackMsg struct {
	In  uint64 `json:"in,omitempty"`  // holder: stdin bytes written to the process
	Sig int    `json:"sig,omitempty"` // holder: signals received
	Out uint64 `json:"out,omitempty"` // session: output bytes passed on
}

// frame is one frame to send.
type frame struct {
	typ wire.Frame
	b   []byte
}

// State is what a detached holder hands to the next one (or back to
// itself when the move fails). It travels as JSON in wire.FrPending.
type State struct {
	Pending []byte `json:"pending,omitempty"` // stdin not yet read by the process; it ends at In
	EOF     bool   `json:"eof,omitempty"`
	Signals []int  `json:"signals,omitempty"` // to deliver once the process runs
	Epoch   int    `json:"epoch,omitempty"`   // of the holder that left it
	In      uint64 `json:"in,omitempty"`      // stdin bytes received from the session, every holder so far
	Sig     int    `json:"sig,omitempty"`     // signals received, likewise
	Gone    bool   `json:"gone,omitempty"`    // the process closed its stdin
	// Output the session may not have yet, from offset OutAt on.
	OutAt uint64     `json:"out_at,omitempty"`
	Out   []OutChunk `json:"out,omitempty"`
	// piped: the first piped bytes of Pending are still in the stdin pipe
	// of the holder that left it (a detach only looks); resume skips them.
	piped int
}

// OutChunk is output of one stream.
type OutChunk struct {
	Err bool   `json:"err,omitempty"` // stderr
	B   []byte `json:"b"`
}
