package cluster

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"ssi/migrate"
)

// Frames carry the attached stdio of cluster processes (client <-> home
// agent <-> the agent where the process runs) and migration streams
// (source agent -> destination agent): a type byte, a big-endian uint32
// length, the payload.
const (
	frHeader = 'h' // JSON: what the stream is (streamHeader); on a holder's stream then a stdioHello, both ways
	// On a holder's stream, frStdin, frStdout and frStderr payloads start
	// with the 8-byte big-endian offset of their first byte (stdio.go).
	frStdin    = 'i' // bytes for the process's stdin
	frEOF      = 'e' // the caller's stdin ended
	frSignal   = 's' // one byte: a signal for the process
	frStdout   = 'o' // bytes the process wrote to stdout
	frStderr   = 'E' // bytes the process wrote to stderr
	frExit     = 'x' // JSON: the process ended (exitInfo)
	frCPID     = 'c' // JSON: the cpid of a process just started
	frAck      = 'a' // JSON stdioAck, on a holder's stream: how far the sender has got; also the keepalive
	frData     = 'd' // a piece of an image file
	frDataEnd  = 'z' // the images are complete
	frPending  = 'p' // JSON: stdio state of a frozen process (stdioState)
	frRestored = 'r' // JSON: the destination's restore outcome (restoreReply)
	frDecision = 'k' // JSON: the source's verdict (decision)
	frError    = '!' // text: the far side gives up, and why
	frReady    = 'y' // JSON: the destination can take the process (restoreReply)
	frDone     = 'f' // the restored process runs
	// frCredit goes from a session to its caller, after frCPID: the
	// 8-byte big-endian count of stdin bytes the caller may send in all,
	// from the start: a total, not an increment, so a late or repeated
	// one changes nothing. The caller's frStdin stays within it (a caller
	// past it is cut off with frError); frEOF and frSignal need none.
	frCredit = 'C' // stdin the caller may send (stdio.go)
	// frWinsize: the size of the caller's terminal, for a process with a
	// terminal of its own (jobns.Winsize.Bytes): caller to session to
	// holder. A state, not a stream: only the latest counts.
	frWinsize = 'w'
)

// maxFrame bounds a frame so a garbage length cannot exhaust memory.
const maxFrame = 4 << 20

// frameConn writes whole frames atomically, so that several goroutines
// may send on one stream.
type frameConn struct {
	rw  io.ReadWriter
	br  *bufio.Reader // reads: a frame header costs no read call of its own
	mu  sync.Mutex
	buf []byte // recvShared's, reused
}

func newFrameConn(rw io.ReadWriter) *frameConn {
	return &frameConn{rw: rw, br: bufio.NewReaderSize(rw, 256<<10)}
}

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
	return c.recvInto(nil)
}

// recvShared is recv into a buffer that the next call reuses: for bulk
// data that is written out at once.
func (c *frameConn) recvShared() (byte, []byte, error) {
	typ, b, err := c.recvInto(c.buf)
	if cap(b) > cap(c.buf) {
		c.buf = b[:cap(b)]
	}
	return typ, b, err
}

func (c *frameConn) recvInto(buf []byte) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("frame of %d bytes: not an ssi stream", n)
	}
	b := buf[:0]
	if cap(b) < int(n) {
		b = make([]byte, n)
	}
	b = b[:n]
	if _, err := io.ReadFull(c.br, b); err != nil {
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

// streamHeader opens a stream on the migration port.
type streamHeader struct {
	Kind string `json:"kind"` // "stdio" or "move"
	CPID int    `json:"cpid"`
	// Move only.
	ID       string `json:"id,omitempty"`
	From     string `json:"from,omitempty"`
	UID      int    `json:"uid,omitempty"`
	Home     string `json:"home,omitempty"`
	Attached bool   `json:"attached,omitempty"`
	// CRIU keys of stdin, stdout, stderr and, for a process with a
	// terminal, its window size pipe ("" otherwise).
	Pipes [4]string `json:"pipes,omitzero"`
	// Files the tree has open or mapped outside /cluster: the destination
	// checks it has them (same size) before anything stops.
	Files []migrate.FileRef `json:"files,omitempty"`
	// PageServer: the source would stream pages during its dump.
	PageServer bool `json:"page_server,omitempty"`
	// Mounts are the node's mounts in the job's mount namespace (see
	// package jobns): left behind, and bound from the destination's.
	Mounts []string `json:"mounts,omitempty"`
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
	// PageServer (in frReady): a page server waits for the pages.
	PageServer bool `json:"page_server,omitempty"`
}

// decision is the outcome the source learned from the agreed state.
type decision struct {
	Commit bool `json:"commit"`
}

// Image files travel as frImage (JSON imageFile) followed by frData frames
// holding exactly its bytes, read from the file and written to the other
// side's file without any staging copy; frDataEnd ends the set.
const frImage = 'F'

// imageFile announces one image file.
type imageFile struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// sendRaw sends a frame without copying payload into a new buffer.
func (c *frameConn) sendRaw(typ byte, payload []byte) error {
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.rw.Write(hdr[:]); err != nil {
		return err
	}
	_, err := c.rw.Write(payload)
	return err
}

// sendImages sends every image in dir (CRIU's logs stay behind) and
// returns the bytes sent.
func sendImages(c *frameConn, dir string) (int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 1<<20)
	var total int64
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		n, err := sendImage(c, filepath.Join(dir, e.Name()), buf)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, c.send(frDataEnd, nil)
}

func sendImage(c *frameConn, path string, buf []byte) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if err := c.sendJSON(frImage, imageFile{Name: fi.Name(), Size: fi.Size()}); err != nil {
		return 0, err
	}
	var sent int64
	for sent < fi.Size() {
		n, err := f.Read(buf[:min(int64(len(buf)), fi.Size()-sent)])
		if n > 0 {
			if err := c.sendRaw(frData, buf[:n]); err != nil {
				return sent, err
			}
			sent += int64(n)
		}
		if err != nil {
			return sent, fmt.Errorf("image %s: %w", fi.Name(), err)
		}
	}
	return sent, nil
}

// recvImages writes the images a peer sends into dir, until frDataEnd.
// Only plain names are accepted, each once, each exactly its size.
func recvImages(c *frameConn, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var f *os.File
	var left int64
	var name string
	closeFile := func() error {
		if f == nil {
			return nil
		}
		err := f.Close()
		f = nil
		if err == nil && left != 0 {
			err = fmt.Errorf("image %s: %d bytes missing", name, left)
		}
		return err
	}
	defer closeFile()
	for {
		typ, b, err := c.recvShared()
		if err != nil {
			return err
		}
		switch typ {
		case frImage:
			if err := closeFile(); err != nil {
				return err
			}
			var im imageFile
			if err := json.Unmarshal(b, &im); err != nil {
				return fmt.Errorf("image header: %w", err)
			}
			if im.Name == "" || im.Name == "." || im.Name == ".." || strings.ContainsAny(im.Name, "/\x00") ||
				im.Size < 0 || im.Size > migrate.MaxImageFile {
				return fmt.Errorf("image %q of %d bytes: not an image", im.Name, im.Size)
			}
			if f, err = os.OpenFile(filepath.Join(dir, im.Name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
				return err
			}
			name, left = im.Name, im.Size
		case frData:
			if f == nil || int64(len(b)) > left {
				return fmt.Errorf("image data beyond its announced size")
			}
			if _, err := f.Write(b); err != nil {
				return err
			}
			left -= int64(len(b))
		case frDataEnd:
			return closeFile()
		case frError:
			return fmt.Errorf("peer: %s", b)
		default:
			return fmt.Errorf("peer sent frame %q among the images", typ)
		}
	}
}
