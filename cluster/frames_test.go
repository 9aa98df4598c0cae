package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"ssi/fs"
)

// A byte stream cut into data frames comes back whole, and what follows
// the end frame is still there.
func TestDataFramesRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	c := newFrameConn(&buf)
	payload := bytes.Repeat([]byte("0123456789"), 300_000) // 3 MB: several frames
	w := &dataWriter{c: c}
	if _, err := w.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := c.send(frDataEnd, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.sendJSON(frPending, stdioState{Pending: []byte("rest"), EOF: true}); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(&dataReader{c: c})
	if err != nil || !bytes.Equal(got, payload) || w.n != int64(len(payload)) {
		t.Fatalf("read back %d bytes (err %v), want %d", len(got), err, len(payload))
	}
	var st stdioState
	if err := c.expect(frPending, &st); err != nil || string(st.Pending) != "rest" || !st.EOF {
		t.Fatalf("frame after the archive: %+v %v", st, err)
	}
}

// A peer speaking garbage gets an error, not a huge allocation.
func TestFramesRefuseGarbage(t *testing.T) {
	var hdr [5]byte
	hdr[0] = frHeader
	binary.BigEndian.PutUint32(hdr[1:], 1<<31)
	c := newFrameConn(bytes.NewBuffer(hdr[:]))
	if _, _, err := c.recv(); err == nil || !strings.Contains(err.Error(), "not an ssi stream") {
		t.Fatalf("huge frame: %v", err)
	}
	var buf bytes.Buffer
	c = newFrameConn(&buf)
	_ = c.send(frError, []byte("restore failed"))
	if err := c.expect(frRestored, nil); err == nil || !strings.Contains(err.Error(), "restore failed") {
		t.Fatalf("error frame: %v", err)
	}
	_ = c.send(frStdout, nil)
	if _, err := io.ReadAll(&dataReader{c: c}); err == nil {
		t.Fatal("a stdout frame inside the archive was accepted")
	}
}

// Errors from another agent keep their text and their errno.
func TestRemoteErrnoKeepsKind(t *testing.T) {
	err := errnoError(fs.ErrnoName(fs.ErrBusy), "process 7 is migrating")
	if !errors.Is(err, fs.ErrBusy) || err.Error() != "process 7 is migrating" {
		t.Fatalf("%v (%T)", err, err)
	}
	if fs.ErrnoName(errors.New("x")) != "EIO" || errnoError("EWHAT", "m").Error() != "m" {
		t.Fatal("unknown errors")
	}
}
