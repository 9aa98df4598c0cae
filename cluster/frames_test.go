package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ssi/fs"
)

// Images sent as frames arrive whole, and what follows the end frame is
// still there.
func TestImagesRoundTrip(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "in")
	big := bytes.Repeat([]byte("0123456789"), 300_000) // 3 MB: several frames
	for name, data := range map[string][]byte{"pages-1.img": big, "core-1.img": []byte("core"), "empty.img": nil, "dump.log": []byte("log")} {
		if err := os.WriteFile(filepath.Join(src, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	c := newFrameConn(&buf)
	n, err := sendImages(c, src)
	if err != nil || n != int64(len(big)+4) {
		t.Fatalf("sent %d bytes, %v", n, err)
	}
	if err := c.sendJSON(frPending, stdioState{Pending: []byte("rest"), EOF: true}); err != nil {
		t.Fatal(err)
	}
	if err := recvImages(c, dst); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{"pages-1.img": big, "core-1.img": []byte("core"), "empty.img": {}} {
		if got, err := os.ReadFile(filepath.Join(dst, name)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: %d bytes, %v", name, len(got), err)
		}
	}
	if _, err := os.Stat(filepath.Join(dst, "dump.log")); err == nil {
		t.Fatal("the log travelled")
	}
	var st stdioState
	if err := c.expect(frPending, &st); err != nil || string(st.Pending) != "rest" || !st.EOF {
		t.Fatalf("frame after the images: %+v %v", st, err)
	}
}

// Image streams that lie are refused.
func TestImagesRefuseLies(t *testing.T) {
	for name, frames := range map[string]func(c *frameConn){
		"path": func(c *frameConn) { _ = c.sendJSON(frImage, imageFile{Name: "../x", Size: 1}) },
		"too long": func(c *frameConn) {
			_ = c.sendJSON(frImage, imageFile{Name: "a", Size: 1})
			_ = c.send(frData, []byte("ab"))
		},
		"short": func(c *frameConn) { _ = c.sendJSON(frImage, imageFile{Name: "a", Size: 3}); _ = c.send(frDataEnd, nil) },
		"twice": func(c *frameConn) {
			_ = c.sendJSON(frImage, imageFile{Name: "a"})
			_ = c.sendJSON(frImage, imageFile{Name: "a"})
		},
		"stray": func(c *frameConn) { _ = c.send(frStdout, nil) },
	} {
		var buf bytes.Buffer
		c := newFrameConn(&buf)
		frames(c)
		if err := recvImages(c, t.TempDir()); err == nil {
			t.Errorf("%s: accepted", name)
		}
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
