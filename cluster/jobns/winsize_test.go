package jobns

import (
	"bytes"
	"testing"
)

// A window size record is the kernel's struct winsize in big-endian
// order, rows first, eight bytes; anything else is no record.
func TestWinsizeRecord(t *testing.T) {
	w := Winsize{Rows: 33, Cols: 258, XPixel: 640, YPixel: 1}
	b := w.Bytes()
	if want := []byte{0, 33, 1, 2, 2, 128, 0, 1}; !bytes.Equal(b, want) {
		t.Fatalf("Bytes() = %v, want %v", b, want)
	}
	if got, ok := ParseWinsize(b); !ok || got != w {
		t.Fatalf("ParseWinsize(%v) = %+v, %v", b, got, ok)
	}
	for _, bad := range [][]byte{nil, b[:7], append(b, 0), Winsize{Cols: 80}.Bytes(), Winsize{Rows: 24}.Bytes()} {
		if got, ok := ParseWinsize(bad); ok {
			t.Errorf("ParseWinsize(%v) = %+v, true; want false", bad, got)
		}
	}
}
