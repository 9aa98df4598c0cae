package wire

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	c := NewConn(&buf)
	n, err := SendImages(c, src)
	if err != nil || n != int64(len(big)+4) {
		t.Fatalf("sent %d bytes, %v", n, err)
	}
	if err := c.SendJSON(FrPending, ExitInfo{Code: 7}); err != nil {
		t.Fatal(err)
	}
	if err := RecvImages(c, dst); err != nil {
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
	var st ExitInfo
	if err := c.Expect(FrPending, &st); err != nil || st.Code != 7 {
		t.Fatalf("frame after the images: %+v %v", st, err)
	}
}

// Image streams that lie are refused.
func TestImagesRefuseLies(t *testing.T) {
	for name, frames := range map[string]func(c *Conn){
		"path": func(c *Conn) { _ = c.SendJSON(FrImage, imageFile{Name: "../x", Size: 1}) },
		"too long": func(c *Conn) {
			_ = c.SendJSON(FrImage, imageFile{Name: "a", Size: 1})
			_ = c.Send(FrData, []byte("ab"))
		},
		"short": func(c *Conn) { _ = c.SendJSON(FrImage, imageFile{Name: "a", Size: 3}); _ = c.Send(FrDataEnd, nil) },
		"twice": func(c *Conn) {
			_ = c.SendJSON(FrImage, imageFile{Name: "a"})
			_ = c.SendJSON(FrImage, imageFile{Name: "a"})
		},
		"stray": func(c *Conn) { _ = c.Send(FrStdout, nil) },
	} {
		var buf bytes.Buffer
		c := NewConn(&buf)
		frames(c)
		if err := RecvImages(c, t.TempDir()); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A peer speaking garbage gets an error, not a huge allocation.
func TestFramesRefuseGarbage(t *testing.T) {
	var hdr [5]byte
	hdr[0] = byte(FrHeader)
	binary.BigEndian.PutUint32(hdr[1:], 1<<31)
	c := NewConn(bytes.NewBuffer(hdr[:]))
	if _, _, err := c.Recv(); err == nil || !strings.Contains(err.Error(), "not an ssi stream") {
		t.Fatalf("huge frame: %v", err)
	}
	var buf bytes.Buffer
	c = NewConn(&buf)
	_ = c.Send(FrError, []byte("restore failed"))
	if err := c.Expect(FrRestored, nil); err == nil || !strings.Contains(err.Error(), "restore failed") {
		t.Fatalf("error frame: %v", err)
	}
}
