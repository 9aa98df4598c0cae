package cluster

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"ssi/migrate"
)

// Frames carry the attached stdio of cluster processes (client <-> home
// agent <-> the agent where the process runs) and migration streams
// (source agent -> destination agent): a type byte, a big-endian uint32
// length, the payload.
const (
	frHeader   = 'h' // JSON: what the stream is (streamHeader)
	frStdin    = 'i' // bytes for the process's stdin
	frEOF      = 'e' // the caller's stdin ended
	frSignal   = 's' // one byte: a signal for the process
	frStdout   = 'o' // bytes the process wrote to stdout
	frStderr   = 'E' // bytes the process wrote to stderr
	frExit     = 'x' // JSON: the process ended (exitInfo)
	frCPID     = 'c' // JSON: the cpid of a process just started
	frDetach   = 'D' // holder -> session: stop sending; session -> holder: nothing more follows
	frData     = 'd' // a piece of the image archive
	frDataEnd  = 'z' // the image archive is complete
	frPending  = 'p' // JSON: stdio state of a frozen process (stdioState)
	frRestored = 'r' // JSON: the destination's restore outcome (restoreReply)
	frDecision = 'k' // JSON: the source's verdict (decision)
	frError    = '!' // text: the far side gives up, and why
	frReady    = 'y' // JSON: the destination can take the process (restoreReply)
	frDone     = 'f' // the restored process runs
)

// maxFrame bounds a frame so a garbage length cannot exhaust memory.
const maxFrame = 4 << 20

// frameConn writes whole frames atomically, so that several goroutines
// may send on one stream.
type frameConn struct {
	rw io.ReadWriter
	mu sync.Mutex
}

func newFrameConn(rw io.ReadWriter) *frameConn { return &frameConn{rw: rw} }

func (c *frameConn) send(typ byte, payload []byte) error {
	buf := make([]byte, 5+len(payload))
	buf[0] = typ
	binary.BigEndian.PutUint32(buf[1:5], uint32(len(payload)))
	copy(buf[5:], payload)
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.rw.Write(buf)
	return err
}

func (c *frameConn) sendJSON(typ byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.send(typ, b)
}

// recv reads one frame; only one goroutine may read a stream.
func (c *frameConn) recv() (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(c.rw, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("frame of %d bytes: not an ssi stream", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c.rw, b); err != nil {
		return 0, nil, err
	}
	return hdr[0], b, nil
}

// expect reads one frame of type want and decodes its JSON into v (if v
// is not nil); an frError frame becomes the error it carries.
func (c *frameConn) expect(want byte, v any) error {
	typ, b, err := c.recv()
	if err != nil {
		return err
	}
	switch {
	case typ == frError:
		return fmt.Errorf("peer: %s", b)
	case typ != want:
		return fmt.Errorf("peer sent frame %q, want %q", typ, want)
	case v != nil:
		return json.Unmarshal(b, v)
	}
	return nil
}

// dataWriter cuts a byte stream into frData frames.
type dataWriter struct {
	c *frameConn
	n int64
}

func (w *dataWriter) Write(p []byte) (int, error) {
	for off := 0; off < len(p); {
		end := min(len(p), off+1<<20)
		if err := w.c.send(frData, p[off:end]); err != nil {
			return off, err
		}
		w.n += int64(end - off)
		off = end
	}
	return len(p), nil
}

// dataReader reads frData frames until frDataEnd.
type dataReader struct {
	c    *frameConn
	buf  []byte
	done bool
}

func (r *dataReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, io.EOF
		}
		typ, b, err := r.c.recv()
		if err != nil {
			return 0, err
		}
		switch typ {
		case frData:
			r.buf = b
		case frDataEnd:
			r.done = true
		case frError:
			return 0, fmt.Errorf("peer: %s", b)
		default:
			return 0, fmt.Errorf("peer sent frame %q inside the image archive", typ)
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// streamHeader opens a stream on the migration port.
type streamHeader struct {
	Kind string `json:"kind"` // "stdio" or "move"
	CPID int    `json:"cpid"`
	// Move only.
	ID       string    `json:"id,omitempty"`
	From     string    `json:"from,omitempty"`
	UID      int       `json:"uid,omitempty"`
	Home     string    `json:"home,omitempty"`
	Attached bool      `json:"attached,omitempty"`
	Pipes    [3]string `json:"pipes,omitzero"` // CRIU keys of stdin, stdout, stderr
	// Files the tree has open or mapped outside /cluster: the destination
	// checks it has them (same size) before anything stops.
	Files []migrate.FileRef `json:"files,omitempty"`
}

// exitInfo is how a process ended.
type exitInfo struct {
	Code int `json:"code"`
}

// restoreReply is the destination's answer after its restore.
type restoreReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Pid   int    `json:"pid,omitempty"`
}

// decision is the outcome the source learned from the agreed state.
type decision struct {
	Commit bool `json:"commit"`
}
