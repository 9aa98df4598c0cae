package fs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mountHome mounts /cluster with h as its home and the kernel allowed to
// cache proc, nodes and admin for a second: the home and failed lookups
// must not be cached all the same.
func mountHome(t *testing.T, h Home) (*fakeView, string) {
	t.Helper()
	if os.Geteuid() != 0 || testing.Short() {
		t.Skip("needs root (FUSE mount): run `sudo make test`")
	}
	v := &fakeView{admin: map[string]bool{},
		procs: []ProcView{{CPID: 7, Node: "node1"}}, nodes: []NodeView{{Name: "node1", Up: true}}}
	return v, mountAt(t, v, Options{Home: h, AttrTimeout: time.Second, EntryTimeout: time.Second})
}

// run runs a shell command with a deadline.
func run(t *testing.T, script string) string {
	t.Helper()
	cmd := exec.Command("bash", "-c", script)
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitFor):
		_ = cmd.Process.Kill()
		t.Fatalf("%q did not end", script)
	}
	if err != nil {
		t.Fatalf("%q: %v: %s", script, err, out)
	}
	return string(out)
}

// What another node changes shows here at once: names made and removed,
// sizes and contents; nothing is served from the kernel's caches.
func TestMountedHomeOneTruth(t *testing.T) {
	h := newMemHome(t)
	v, dir := mountHome(t, h)
	file := filepath.Join(dir, "home", "hello")

	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("before: %v", err)
	}
	h.put("hello", "hi\n")
	if st, err := os.Stat(file); err != nil || st.Size() != 3 {
		t.Fatalf("made elsewhere: %v, %v (a failed lookup was kept)", st, err)
	}
	if got := readFile(t, file); got != "hi\n" {
		t.Fatalf("read %q", got)
	}
	h.put("hello", "hello world\n")
	if st, err := os.Stat(file); err != nil || st.Size() != 12 {
		t.Fatalf("rewritten elsewhere: %v, %v (a size was kept)", st, err)
	}
	if got := readFile(t, file); got != "hello world\n" {
		t.Fatalf("read %q after the rewrite", got)
	}
	h.remove("hello")
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("removed elsewhere: %v (a name was kept)", err)
	}

	// A process started elsewhere is found at once, though proc may be
	// cached for a second: failed lookups never are.
	proc9 := filepath.Join(dir, "proc", "9")
	if _, err := os.Stat(proc9); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("proc/9 before: %v", err)
	}
	v.mu.Lock()
	v.procs = append(v.procs, ProcView{CPID: 9, Node: "node1"})
	v.mu.Unlock()
	if _, err := os.Stat(proc9); err != nil {
		t.Fatalf("proc/9 after its start: %v (a failed lookup was kept)", err)
	}
}

// Processes of one node: a reader sees a writer's bytes before its close,
// and an O_APPEND write lands after them.
func TestMountedHomeWriters(t *testing.T) {
	h := newMemHome(t)
	_, dir := mountHome(t, h)
	file := filepath.Join(dir, "home", "log")
	w, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.WriteString("abc"); err != nil {
		t.Fatal(err)
	}
	if got := run(t, fmt.Sprintf("cat %q", file)); got != "abc" {
		t.Fatalf("another process reads %q before the close", got)
	}
	run(t, fmt.Sprintf("printf d >> %q", file))
	if err := w.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	ino, _ := h.Lookup(1, "log")
	if got := h.content(ino.Ino); got != "abcd" {
		t.Fatalf("the replica holds %q, want abcd", got)
	}
}

// A listing passes one barrier and looks nothing up; each lstat after it
// passes its own (the directory's getattr, the lookup, the file's
// getattr): READDIRPLUS would add one per entry. The home has no
// extended attributes, and says so.
func TestMountedHomeListing(t *testing.T) {
	h := newMemHome(t)
	const files = 100
	for i := range files {
		h.put(fmt.Sprintf("f%03d", i), "x")
	}
	_, dir := mountHome(t, h)
	home := filepath.Join(dir, "home")
	if _, err := os.Stat(home); err != nil {
		t.Fatal(err)
	}
	fresh, lookups := h.fresh.Load(), h.lookups.Load()
	ents, err := os.ReadDir(home)
	if err != nil || len(ents) != files {
		t.Fatalf("listed %d entries: %v", len(ents), err)
	}
	f, l := h.fresh.Load()-fresh, h.lookups.Load()-lookups
	t.Logf("a listing of %d files: %d barriers, %d lookups", files, f, l)
	if f > 3 || l != 0 {
		t.Fatalf("a listing of %d files passed %d barriers and made %d lookups", files, f, l)
	}
	fresh = h.fresh.Load()
	for _, e := range ents {
		if _, err := os.Lstat(filepath.Join(home, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if f := h.fresh.Load() - fresh; f != 3*files {
		t.Fatalf("lstat of %d files passed %d barriers, want %d", files, f, 3*files)
	}
	_, err = unix.Lgetxattr(filepath.Join(home, "f000"), "user.x", make([]byte, 64))
	if !errors.Is(err, unix.EOPNOTSUPP) {
		t.Fatalf("getxattr: %v, want EOPNOTSUPP", err)
	}
	fresh = h.fresh.Load()
	out := run(t, fmt.Sprintf("ls -l %q", home))
	if got := strings.Count(out, "\n"); got != files+1 {
		t.Fatalf("ls -l printed %d lines", got)
	}
	t.Logf("ls -l of %d files: %d barriers", files, h.fresh.Load()-fresh)
}
