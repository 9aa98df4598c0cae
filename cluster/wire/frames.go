// Package wire owns the framing of ssi's streams (attached stdio and
// migrations on the migration port): one table of frame codes, the
// frame connection, the messages both ends of a stream share and the
// image file stream. It knows nothing of jobs, Raft or CRIU's meaning.
package wire

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

// Frame is a frame's type byte.
type Frame byte

// Frames carry the attached stdio of cluster processes (client <-> home
// agent <-> the agent where the process runs) and migration streams
// (source agent -> destination agent): a type byte, a big-endian uint32
// length, the payload.
const (
	FrHeader Frame = 'h' // JSON: what the stream is (StreamHeader); on a holder's stream then a hello (package stdio), both ways
	// On a holder's stream, FrStdin, FrStdout and FrStderr payloads start
	// with the 8-byte big-endian offset of their first byte (WithAt; package stdio).
	FrStdin    Frame = 'i' // bytes for the process's stdin
	FrEOF      Frame = 'e' // the caller's stdin ended
	FrSignal   Frame = 's' // one byte: a signal for the process
	FrStdout   Frame = 'o' // bytes the process wrote to stdout
	FrStderr   Frame = 'E' // bytes the process wrote to stderr
	FrExit     Frame = 'x' // JSON: the process ended (ExitInfo)
	FrCPID     Frame = 'c' // JSON: the cpid of a process just started
	FrAck      Frame = 'a' // JSON ack (package stdio), on a holder's stream: how far the sender has got; also the keepalive
	FrData     Frame = 'd' // a piece of an image file
	FrDataEnd  Frame = 'z' // the images are complete
	FrPending  Frame = 'p' // JSON: stdio state of a frozen process (stdio.State)
	FrRestored Frame = 'r' // JSON: the destination's restore outcome (RestoreReply)
	FrDecision Frame = 'k' // JSON: the source's verdict (Decision)
	FrError    Frame = '!' // text: the far side gives up, and why
	FrReady    Frame = 'y' // JSON: the destination can take the process (RestoreReply)
	FrDone     Frame = 'f' // the restored process runs
	// FrCredit goes from a session to its caller, after FrCPID: the
	// 8-byte big-endian count of stdin bytes the caller may send in all,
	// from the start: a total, not an increment, so a late or repeated
	// one changes nothing. The caller's FrStdin stays within it (a caller
	// past it is cut off with FrError); FrEOF and FrSignal need none.
	FrCredit Frame = 'C' // stdin the caller may send (CreditOf; package stdio)
	// FrWinsize: the size of the caller's terminal, for a process with a
	// terminal of its own (jobns.Winsize.Bytes): caller to session to
	// holder. A state, not a stream: only the latest counts.
	FrWinsize Frame = 'w'
	// Memory pages travel while CRIU dumps: CRIU's dump on the source and
	// a CRIU page server on the destination each talk to a local socket,
	// and the agents relay the bytes between those sockets as FrPages
	// frames on the migration stream, both ways (the page server
	// answers). Each side sends FrPagesEnd when its CRIU closes its
	// socket; once both have, the stream goes on with the other images.
	FrPages    Frame = 'P'
	FrPagesEnd Frame = 'Q'
)

// MaxFrame bounds a frame so a garbage length cannot exhaust memory.
const MaxFrame = 4 << 20

// Conn writes whole frames atomically, so that several goroutines
// may send on one stream.
type Conn struct {
	rw  io.ReadWriter
	br  *bufio.Reader // reads: a frame header costs no read call of its own
	mu  sync.Mutex
	buf []byte // recvShared's, reused
}

func NewConn(rw io.ReadWriter) *Conn {
	return &Conn{rw: rw, br: bufio.NewReaderSize(rw, 256<<10)}
}

// Stream is what the frames travel on: for deadlines and closing.
func (c *Conn) Stream() io.ReadWriter { return c.rw }

func (c *Conn) Send(typ Frame, payload []byte) error {
	buf := make([]byte, 5+len(payload))
	buf[0] = byte(typ)
	binary.BigEndian.PutUint32(buf[1:5], uint32(len(payload)))
	copy(buf[5:], payload)
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.rw.Write(buf)
	return err
}

func (c *Conn) SendJSON(typ Frame, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.Send(typ, b)
}

// recv reads one frame; only one goroutine may read a stream.
func (c *Conn) Recv() (Frame, []byte, error) {
	return c.RecvInto(nil)
}

// recvShared is recv into a buffer that the next call reuses: for bulk
// data that is written out at once.
func (c *Conn) RecvShared() (Frame, []byte, error) {
	typ, b, err := c.RecvInto(c.buf)
	if cap(b) > cap(c.buf) {
		c.buf = b[:cap(b)]
	}
	return typ, b, err
}

func (c *Conn) RecvInto(buf []byte) (Frame, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxFrame {
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
	return Frame(hdr[0]), b, nil
}

// expect reads one frame of type want and decodes its JSON into v (if v
// is not nil); an FrError frame becomes the error it carries.
func (c *Conn) Expect(want Frame, v any) error {
	typ, b, err := c.Recv()
	if err != nil {
		return err
	}
	switch {
	case typ == FrError:
		return fmt.Errorf("peer: %s", b)
	case typ != want:
		return fmt.Errorf("peer sent frame %q, want %q", typ, want)
	case v != nil:
		return json.Unmarshal(b, v)
	}
	return nil
}

// StreamKind says what a stream on the migration port carries.
type StreamKind string

const (
	KindStdio StreamKind = "stdio" // a holder's stream to its session
	KindMove  StreamKind = "move"  // a migration, source to destination
)

// StreamHeader opens a stream on the migration port.
type StreamHeader struct {
	Kind StreamKind `json:"kind"`
	CPID int        `json:"cpid"`
	// Move only.
	ID       string `json:"id,omitempty"`
	From     string `json:"from,omitempty"`
	UID      int    `json:"uid,omitempty"`
	Home     string `json:"home,omitempty"`
	Attached bool   `json:"attached,omitempty"`
	// CRIU keys of stdin, stdout, stderr and, for a process with a
	// terminal, its window size pipe ("" otherwise).
	Pipes [4]string `json:"pipes,omitzero"`
	// Files the tree has open or mapped outside its own mounts (its /tmp
	// and /dev/shm travel in the images), /cluster's included: the
	// destination checks, as the owner, that it has each one (no link
	// in the path, same kind, same size if only read, same inode under
	// /cluster) before anything stops, and CRIU gets them from it
	// (migrate.CheckFiles).
	Files []migrate.FileRef `json:"files,omitempty"`
	// PageServer: the source would stream pages during its dump.
	PageServer bool `json:"page_server,omitempty"`
	// Mounts are the node's mounts in the job's mount namespace (see
	// package jobns): left behind, and bound from the destination's.
	Mounts []string `json:"mounts,omitempty"`
}

// ExitInfo is how a process ended.
type ExitInfo struct {
	Code int `json:"code"`
}

// RestoreReply is the destination's answer after its restore.
type RestoreReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Pid   int    `json:"pid,omitempty"`
	// PageServer (in FrReady): a page server waits for the pages.
	PageServer bool `json:"page_server,omitempty"`
}

// Decision is the outcome the source learned from the agreed state.
type Decision struct {
	Commit bool `json:"commit"`
}

// Image files travel as FrImage (JSON imageFile) followed by FrData frames
// holding exactly its bytes, read from the file and written to the other
// side's file without any staging copy; FrDataEnd ends the set.
const FrImage Frame = 'F'

// imageFile announces one image file.
type imageFile struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// sendRaw sends a frame without copying payload into a new buffer.
func (c *Conn) SendRaw(typ Frame, payload []byte) error {
	var hdr [5]byte
	hdr[0] = byte(typ)
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.rw.Write(hdr[:]); err != nil {
		return err
	}
	_, err := c.rw.Write(payload)
	return err
}

// SendImages sends every image in dir (CRIU's logs stay behind) and
// returns the bytes sent.
func SendImages(c *Conn, dir string) (int64, error) {
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
	return total, c.Send(FrDataEnd, nil)
}

func sendImage(c *Conn, path string, buf []byte) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if err := c.SendJSON(FrImage, imageFile{Name: fi.Name(), Size: fi.Size()}); err != nil {
		return 0, err
	}
	var sent int64
	for sent < fi.Size() {
		n, err := f.Read(buf[:min(int64(len(buf)), fi.Size()-sent)])
		if n > 0 {
			if err := c.SendRaw(FrData, buf[:n]); err != nil {
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

// RecvImages writes the images a peer sends into dir, until FrDataEnd.
// Only plain names are accepted, each once, each exactly its size.
func RecvImages(c *Conn, dir string) error {
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
		typ, b, err := c.RecvShared()
		if err != nil {
			return err
		}
		switch typ {
		case FrImage:
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
		case FrData:
			if f == nil || int64(len(b)) > left {
				return fmt.Errorf("image data beyond its announced size")
			}
			if _, err := f.Write(b); err != nil {
				return err
			}
			left -= int64(len(b))
		case FrDataEnd:
			return closeFile()
		case FrError:
			return fmt.Errorf("peer: %s", b)
		default:
			return fmt.Errorf("peer sent frame %q among the images", typ)
		}
	}
}

// CreditOf is the payload of FrCredit: how many stdin bytes the caller
// may send in all, from the start (big-endian uint64).
func CreditOf(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// ParseCredit reads an FrCredit payload.
func ParseCredit(p []byte) (uint64, bool) {
	if len(p) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(p), true
}

// WithAt is the payload of a data frame on a holder's stream: the
// offset of its first byte (big-endian uint64), then the bytes.
func WithAt(at uint64, b []byte) []byte {
	p := make([]byte, 8+len(b))
	binary.BigEndian.PutUint64(p, at)
	copy(p[8:], b)
	return p
}

// SplitAt reads a WithAt payload.
func SplitAt(p []byte) (uint64, []byte, bool) {
	if len(p) < 8 {
		return 0, nil, false
	}
	return binary.BigEndian.Uint64(p), p[8:], true
}
