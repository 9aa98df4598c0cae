package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// frame builds one frame's bytes, for seeds.
func frame(typ Frame, payload []byte) []byte {
	b := []byte{byte(typ), 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

// FuzzRecv: whatever a peer sends, the decoder returns frames no longer
// than MaxFrame whose bytes are exactly what the stream held, or an
// error; it never panics nor allocates past MaxFrame.
func FuzzRecv(f *testing.F) {
	f.Add(frame(FrStdin, WithAt(7, []byte("hello"))))
	f.Add(append(frame(FrCredit, CreditOf(1<<20)), frame(FrEOF, nil)...))
	f.Add([]byte{byte(FrData), 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{byte(FrHeader), 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		c := NewConn(readOnly{bytes.NewReader(in)})
		consumed := 0
		for {
			typ, b, err := c.Recv()
			if err != nil {
				return
			}
			if len(b) > MaxFrame {
				t.Fatalf("frame of %d bytes", len(b))
			}
			want := in[consumed+5 : consumed+5+len(b)]
			if in[consumed] != byte(typ) || !bytes.Equal(b, want) {
				t.Fatalf("frame %q at %d differs from the stream", typ, consumed)
			}
			consumed += 5 + len(b)
			if at, rest, ok := SplitAt(b); ok && len(rest) != len(b)-8 {
				t.Fatalf("SplitAt(%d bytes) = %d, %d bytes", len(b), at, len(rest))
			}
			if n, ok := ParseCredit(b); ok && !bytes.Equal(CreditOf(n), b) {
				t.Fatalf("ParseCredit(%x) = %d does not round-trip", b, n)
			}
		}
	})
}

// FuzzRecvImages: an image stream from a peer writes only plain files
// inside the images directory, each exactly its announced size.
func FuzzRecvImages(f *testing.F) {
	hdr := func(name string, size int64) []byte {
		b, _ := json.Marshal(imageFile{Name: name, Size: size})
		return frame(FrImage, b)
	}
	var ok []byte
	ok = append(ok, hdr("core-1.img", 3)...)
	ok = append(ok, frame(FrData, []byte("abc"))...)
	ok = append(ok, frame(FrDataEnd, nil)...)
	f.Add(ok)
	f.Add(append(hdr("../escape", 1), frame(FrData, []byte("x"))...))
	f.Add(append(hdr("big", 1), frame(FrData, []byte("xy"))...))
	f.Fuzz(func(t *testing.T, in []byte) {
		root := t.TempDir()
		dir := filepath.Join(root, "images")
		err := RecvImages(NewConn(readOnly{bytes.NewReader(in)}), dir)
		entries, _ := os.ReadDir(root)
		if len(entries) > 1 || (len(entries) == 1 && entries[0].Name() != "images") {
			t.Fatalf("wrote outside the images directory: %v", entries)
		}
		files, _ := os.ReadDir(dir)
		for _, e := range files {
			if !e.Type().IsRegular() {
				t.Fatalf("%s is not a plain file", e.Name())
			}
		}
		if err == nil && !bytes.Contains(in, []byte{byte(FrDataEnd)}) {
			t.Fatal("accepted a stream without its end")
		}
	})
}

// readOnly is a stream that only reads: what a peer sent.
type readOnly struct{ *bytes.Reader }

func (readOnly) Write(p []byte) (int, error) { return len(p), nil }
