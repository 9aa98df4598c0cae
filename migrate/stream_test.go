package migrate

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestPackUnpackRoundTrip(t *testing.T) {
	src := t.TempDir()
	files := map[string][]byte{
		"core-1.img":  bytes.Repeat([]byte{1, 2, 3}, 1000),
		"pages-1.img": bytes.Repeat([]byte{0xab}, 1<<20),
		"empty.img":   nil,
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(src, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Logs stay behind.
	if err := os.WriteFile(filepath.Join(src, "dump.log"), []byte("log"), 0o600); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Pack(src, &buf); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "out")
	n, err := Unpack(&buf, dst)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(files) {
		t.Fatalf("unpacked %d files, want %d", n, len(files))
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes, err %v; want %d bytes", name, len(got), err, len(want))
		}
	}
	if _, err := os.Stat(filepath.Join(dst, "dump.log")); !os.IsNotExist(err) {
		t.Errorf("dump.log was carried: %v", err)
	}
}

func TestUnpackRefusesBadStreams(t *testing.T) {
	entry := func(hdr *tar.Header, body []byte) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
		tw.Close()
		return buf.Bytes()
	}
	cases := map[string][]byte{
		"garbage":     bytes.Repeat([]byte("not a tar stream "), 64),
		"escape":      entry(&tar.Header{Name: "../evil", Size: 1, Typeflag: tar.TypeReg, Mode: 0o600}, []byte("x")),
		"subdir":      entry(&tar.Header{Name: "a/b", Size: 1, Typeflag: tar.TypeReg, Mode: 0o600}, []byte("x")),
		"symlink":     entry(&tar.Header{Name: "l", Linkname: "/etc/passwd", Typeflag: tar.TypeSymlink}, nil),
		"truncated":   entry(&tar.Header{Name: "f", Size: 100, Typeflag: tar.TypeReg, Mode: 0o600}, []byte("x"))[:600],
		"hugeheader":  entry(&tar.Header{Name: "f", Size: MaxImageFile + 1, Typeflag: tar.TypeReg, Mode: 0o600}, nil)[:512],
		"dotdot only": entry(&tar.Header{Name: "..", Size: 0, Typeflag: tar.TypeReg, Mode: 0o600}, nil),
	}
	for name, stream := range cases {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			dst := filepath.Join(parent, "img")
			_, err := Unpack(bytes.NewReader(stream), dst)
			if !errors.Is(err, ErrBadStream) {
				t.Fatalf("got %v, want ErrBadStream", err)
			}
			if _, err := os.Stat(filepath.Join(parent, "evil")); !os.IsNotExist(err) {
				t.Fatalf("a file escaped the images directory")
			}
		})
	}
}

func TestFormatVersion(t *testing.T) {
	if got := FormatVersion(40101); got != "4.1.1" {
		t.Fatalf("got %s", got)
	}
	// 4.2: 4.1 cannot checkpoint an inet socket on kernels >= 6.16.
	if MinVersion != 40200 {
		t.Fatalf("MinVersion %d: want 4.2", MinVersion)
	}
}

func TestLogErrorsQuotesErrorLines(t *testing.T) {
	p := filepath.Join(t.TempDir(), "dump.log")
	os.WriteFile(p, []byte("(00.1) start\n(00.2) Error (criu/cr-dump.c:1): Can't dump x\n(00.3) end\n"), 0o600)
	got := logErrors(p)
	if got != "(00.2) Error (criu/cr-dump.c:1): Can't dump x" {
		t.Fatalf("got %q", got)
	}
	if got := logErrors(filepath.Join(t.TempDir(), "none")); got == "" {
		t.Fatal("missing log gave no explanation")
	}
}
