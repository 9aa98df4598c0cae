package jobs

import (
	"os"
	"path/filepath"
	"testing"
)

// The copy is named by content: the same bytes give the same name (every
// agent of one build agrees), other bytes another name (an upgrade never
// replaces what running jobs map).
func TestCopyByContent(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "a")
	if err := os.WriteFile(src, []byte("build one"), 0o755); err != nil {
		t.Fatal(err)
	}
	p1, err := copyByContent(src, filepath.Join(dir, "bin"))
	if err != nil {
		t.Fatal(err)
	}
	p2, err := copyByContent(src, filepath.Join(dir, "bin"))
	if err != nil || p2 != p1 {
		t.Fatalf("second copy: %q %v, want %q", p2, err, p1)
	}
	if b, err := os.ReadFile(p1); err != nil || string(b) != "build one" {
		t.Fatalf("copy holds %q %v", b, err)
	}
	if fi, err := os.Stat(p1); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("copy mode: %v %v", fi, err)
	}
	if err := os.WriteFile(src, []byte("build two"), 0o755); err != nil {
		t.Fatal(err)
	}
	p3, err := copyByContent(src, filepath.Join(dir, "bin"))
	if err != nil || p3 == p1 {
		t.Fatalf("another build: %q %v, want a name other than %q", p3, err, p1)
	}
	if b, _ := os.ReadFile(p1); string(b) != "build one" {
		t.Fatalf("the first copy changed: %q", b)
	}
}
