package fs

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// A bystander's lookup, stat, read and close commit nothing and never get
// the writer's failure; the writer's close does, once.
func TestHomeBystanderNeverCommits(t *testing.T) {
	h := newMemHome(t)
	ino := h.put("f", "0123456789")
	_, root := homeTree(h)
	n, _ := hlookup(t, root, "f")
	w := hopen(t, n, syscall.O_WRONLY)
	if e := hwrite(t, n, w, 10, "abc"); e != 0 {
		t.Fatal(e)
	}

	// Another process of this node sees the writer's bytes, and commits
	// nothing.
	r := hopen(t, n, syscall.O_RDONLY)
	if _, out := hlookup(t, root, "f"); out.Size != 13 {
		t.Fatalf("lookup: size %d, want 13", out.Size)
	}
	if got := hsize(t, n); got != 13 {
		t.Fatalf("getattr: size %d, want 13", got)
	}
	if got := hread(t, n, 0, 64); got != "0123456789abc" {
		t.Fatalf("read %q", got)
	}
	if e := n.Flush(context.Background(), r); e != 0 {
		t.Fatalf("the reader's close: %v", e)
	}
	if got := h.writes.Load(); got != 0 {
		t.Fatalf("bystanders made %d writes", got)
	}

	// The writer's full batch fails: the bystanders go on as before and
	// no longer see the bytes that did not land.
	h.failWith(ErrNoQuorum)
	if e := hwrite(t, n, w, 13, strings.Repeat("z", maxBatch)); e != 0 {
		t.Fatalf("the write that sent the batch: %v", e)
	}
	failed(t, w.b, 1)
	h.failWith(nil)
	if _, out := hlookup(t, root, "f"); out.Size != 10 {
		t.Fatalf("lookup after the failure: size %d, want 10", out.Size)
	}
	if got := hsize(t, n); got != 10 {
		t.Fatalf("getattr after the failure: size %d, want 10", got)
	}
	if got := hread(t, n, 0, 64); got != "0123456789" {
		t.Fatalf("read after the failure: %q", got)
	}
	if e := n.Flush(context.Background(), r); e != 0 {
		t.Fatalf("the reader's close after the failure: %v", e)
	}
	if e := n.Flush(context.Background(), w); e != syscall.EROFS {
		t.Fatalf("the writer's close: %v, want EROFS", e)
	}
	if e := n.Flush(context.Background(), w); e != 0 {
		t.Fatalf("the writer's second close: %v, want 0 (told once)", e)
	}
	if got := h.content(ino); got != "0123456789" {
		t.Fatalf("replica holds %q", got)
	}
}

// A failure reaches every handle open when it happened, on its next
// write, fsync or close, exactly once; never one opened after.
func TestHomeErrseq(t *testing.T) {
	h := newMemHome(t)
	h.put("f", "")
	_, root := homeTree(h)
	n, _ := hlookup(t, root, "f")
	ctx := context.Background()
	a := hopen(t, n, syscall.O_WRONLY)
	b := hopen(t, n, syscall.O_RDWR)
	r := hopen(t, n, syscall.O_RDONLY)

	h.failWith(ErrNoQuorum)
	if e := hwrite(t, n, a, 0, strings.Repeat("a", maxBatch)); e != 0 {
		t.Fatal(e)
	}
	failed(t, a.b, 1)
	h.failWith(nil)
	c := hopen(t, n, syscall.O_WRONLY) // after the failure

	for _, s := range errseqSteps(t, n, a, b, c, r) {
		if got := s.op(); got != s.want {
			t.Fatalf("%s: %v, want %v", s.name, got, s.want)
		}
	}
	if got := h.content(a.ino); got != "xy" {
		t.Fatalf("replica holds %q, want the writes after the failure", got)
	}

	// A truncate whose commit fails says so and changes nothing; the
	// writers still hear of it.
	if e := hwrite(t, n, a, 2, "zz"); e != 0 {
		t.Fatal(e)
	}
	failTruncate(t, h, n)
	if got := h.content(a.ino); got != "xy" {
		t.Fatalf("after the failed truncate the replica holds %q", got)
	}
	for _, s := range []struct {
		name string
		h    *homeHandle
		want syscall.Errno
	}{{"a", a, syscall.EROFS}, {"a again", a, 0}, {"c", c, syscall.EROFS}, {"c again", c, 0}} {
		if got := n.Flush(ctx, s.h); got != s.want {
			t.Fatalf("close of %s after the truncate: %v, want %v", s.name, got, s.want)
		}
	}
}

// errnoStep is one call on a handle and the errno it must give.
type errnoStep struct {
	name string
	op   func() syscall.Errno
	want syscall.Errno
}

// errseqSteps are TestHomeErrseq's calls after a's batch failed: a and b
// were open then, c opened after, r only reads.
func errseqSteps(t *testing.T, n *homeNode, a, b, c, r *homeHandle) []errnoStep {
	ctx := context.Background()
	return []errnoStep{
		{"a writes", func() syscall.Errno { return hwrite(t, n, a, 0, "x") }, syscall.EROFS},
		{"a writes again", func() syscall.Errno { return hwrite(t, n, a, 0, "x") }, 0},
		{"a closes", func() syscall.Errno { return n.Flush(ctx, a) }, 0},
		{"b fsyncs", func() syscall.Errno { return n.Fsync(ctx, b, 0) }, syscall.EROFS},
		{"b closes", func() syscall.Errno { return n.Flush(ctx, b) }, 0},
		{"c writes", func() syscall.Errno { return hwrite(t, n, c, 1, "y") }, 0},
		{"c closes", func() syscall.Errno { return n.Flush(ctx, c) }, 0},
		{"the reader closes", func() syscall.Errno { return n.Flush(ctx, r) }, 0},
		{"the reader fsyncs", func() syscall.Errno { return n.Fsync(ctx, r, 0) }, syscall.EROFS},
		{"the reader fsyncs again", func() syscall.Errno { return n.Fsync(ctx, r, 0) }, 0},
	}
}

// failTruncate truncates n to 0 and has the replica refuse the commit:
// the truncate must say so.
func failTruncate(t *testing.T, h *memHome, n *homeNode) {
	t.Helper()
	h.hold.Store(true)
	truncated := start(func() error {
		var in fuse.SetAttrIn
		in.Valid, in.Size = fuse.FATTR_SIZE, 0
		var out fuse.AttrOut
		if e := n.Setattr(context.Background(), nil, &in, &out); e != 0 {
			return e
		}
		return nil
	})
	h.nextWrite(t).refuse(ErrNoQuorum)
	if err := await(t, "truncate", truncated); err != syscall.EROFS {
		t.Fatalf("truncate: %v, want EROFS", err)
	}
	h.hold.Store(false)
}

// This node's lookups and stats see the size its writers made, buffered
// or on its way; the replica (what other nodes see) only what landed.
func TestHomeLocalSize(t *testing.T) {
	h := newMemHome(t)
	ino := h.put("f", "")
	h.hold.Store(true)
	_, root := homeTree(h)
	n, _ := hlookup(t, root, "f")
	w := hopen(t, n, syscall.O_WRONLY)
	if e := hwrite(t, n, w, 0, strings.Repeat("a", maxBatch)); e != 0 {
		t.Fatal(e)
	}
	flying := h.nextWrite(t)
	if e := hwrite(t, n, w, maxBatch, "xy"); e != 0 {
		t.Fatal(e)
	}
	check := func(when string, want, replica uint64) {
		t.Helper()
		if _, out := hlookup(t, root, "f"); out.Size != want {
			t.Fatalf("%s: lookup says %d, want %d", when, out.Size, want)
		}
		if got := hsize(t, n); got != want {
			t.Fatalf("%s: getattr says %d, want %d", when, got, want)
		}
		if a, _ := h.Getattr(ino); a.Size != replica {
			t.Fatalf("%s: the replica says %d, want %d", when, a.Size, replica)
		}
	}
	check("in flight", maxBatch+2, 0)
	flying.land()
	eventually(t, "the flight landed", func() bool { a, _ := h.Getattr(ino); return a.Size == maxBatch })
	check("landed", maxBatch+2, maxBatch)
	h.hold.Store(false)
	if e := n.Flush(context.Background(), w); e != 0 {
		t.Fatal(e)
	}
	check("closed", maxBatch+2, maxBatch+2)
}

// Another handle's read sees the bytes buffered and on their way, over
// the replica, a hole as zeros; the replica's own bytes once they land.
func TestHomeReadOverlay(t *testing.T) {
	h := newMemHome(t)
	h.put("f", "aaaaaaaaaa")
	h.put("g", "untouched")
	h.hold.Store(true)
	_, root := homeTree(h)
	n, _ := hlookup(t, root, "f")
	g, _ := hlookup(t, root, "g")
	w := hopen(t, n, syscall.O_WRONLY)
	if e := hwrite(t, n, w, 100, strings.Repeat("F", maxBatch)); e != 0 {
		t.Fatal(e)
	}
	flying := h.nextWrite(t)
	for _, x := range []struct {
		off  int64
		data string
	}{{2, "xy"}, {20, "zz"}, {101, "b"}} {
		if e := hwrite(t, n, w, x.off, x.data); e != 0 {
			t.Fatal(e)
		}
	}
	hopen(t, n, syscall.O_RDONLY)
	head := "aaxyaaaaaa" + strings.Repeat("\x00", 10) + "zz" + strings.Repeat("\x00", 10)
	check := func(when string) {
		t.Helper()
		if got := hread(t, n, 0, 32); got != head {
			t.Fatalf("%s: read %q, want %q", when, got, head)
		}
		if got := hread(t, n, 96, 8); got != "\x00\x00\x00\x00FbFF" {
			t.Fatalf("%s: read at 96: %q", when, got)
		}
		if got := hread(t, n, maxBatch+96, 8); got != "FFFF" {
			t.Fatalf("%s: read at the end: %q", when, got)
		}
	}
	check("in flight")
	flying.land()
	eventually(t, "the flight landed", func() bool { return len(h.landedOffsets()) == 1 })
	check("landed")
	if got := hread(t, g, 0, 64); got != "untouched" {
		t.Fatalf("a file nobody writes: %q", got)
	}
}

// FlushHome commits every inode's buffered bytes, waits for those on
// their way, and reports a failure until every writer has heard of it.
func TestHomeFlushHome(t *testing.T) {
	ctx := context.Background()
	if err := (&Mounted{}).FlushHome(ctx); err != nil {
		t.Fatalf("without a Home: %v", err)
	}
	h := newMemHome(t)
	f1, f2 := h.put("f1", ""), h.put("f2", "")
	f, root := homeTree(h)
	m := &Mounted{home: f}
	n1, _ := hlookup(t, root, "f1")
	n2, _ := hlookup(t, root, "f2")
	w1, w2 := hopen(t, n1, syscall.O_WRONLY), hopen(t, n2, syscall.O_WRONLY)
	if err := m.FlushHome(ctx); err != nil || h.writes.Load() != 0 {
		t.Fatalf("nothing buffered: %v, %d writes", err, h.writes.Load())
	}

	h.hold.Store(true)
	big := strings.Repeat("a", maxBatch)
	if e := hwrite(t, n1, w1, 0, big); e != 0 {
		t.Fatal(e)
	}
	flying := h.nextWrite(t)
	h.hold.Store(false)
	if hwrite(t, n1, w1, maxBatch, "tail") != 0 || hwrite(t, n2, w2, 0, "two") != 0 {
		t.Fatal("buffering failed")
	}
	done := start(func() error { return m.FlushHome(ctx) })
	eventually(t, "f2 committed", func() bool { return h.content(f2) == "two" })
	select {
	case err := <-done:
		t.Fatalf("FlushHome returned (%v) before the flight landed", err)
	default:
	}
	flying.land()
	if err := await(t, "FlushHome", done); err != nil {
		t.Fatal(err)
	}
	if got := h.content(f1); got != big+"tail" {
		t.Fatalf("f1 holds %d bytes, want %d", len(got), len(big)+4)
	}

	// A failure: FlushHome reports its own commit's failure; an older one
	// stays the writers' (each hears of it once), not every later flush's.
	flushHomeFailure(t, h, m, n1, w1)
}

// flushHomeFailure has a commit of w's writes on n fail under FlushHome,
// with a second writer on n open.
func flushHomeFailure(t *testing.T, h *memHome, m *Mounted, n *homeNode, w *homeHandle) {
	t.Helper()
	ctx := context.Background()
	wb := hopen(t, n, syscall.O_WRONLY)
	if e := hwrite(t, n, w, 0, "x"); e != 0 {
		t.Fatal(e)
	}
	h.failWith(ErrNoQuorum)
	if err := m.FlushHome(ctx); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("a failed commit: %v", err)
	}
	h.failWith(nil)
	if e := n.Flush(ctx, w); e != syscall.EROFS {
		t.Fatalf("the writer's close: %v, want EROFS", e)
	}
	if err := m.FlushHome(ctx); err != nil {
		t.Fatalf("an older failure, a writer not yet told: %v", err)
	}
	if e := hwrite(t, n, wb, 0, "y"); e != syscall.EROFS {
		t.Fatalf("the other writer's write: %v, want EROFS", e)
	}
	if e := hwrite(t, n, wb, 0, "y"); e != 0 {
		t.Fatalf("the other writer's next write, told once: %v", e)
	}
}

// FlushHome runs safely beside writers of other files (run with -race).
func TestHomeFlushHomeConcurrent(t *testing.T) {
	h := newMemHome(t)
	f, root := homeTree(h)
	m := &Mounted{home: f}
	var wg sync.WaitGroup
	for i := range 4 {
		name := string(rune('a' + i))
		ino := h.put(name, "")
		n, _ := hlookup(t, root, name)
		w := hopen(t, n, syscall.O_WRONLY)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				if e := hwrite(t, n, w, int64(j), "x"); e != 0 {
					t.Errorf("write: %v", e)
					return
				}
			}
			if e := n.Flush(context.Background(), w); e != 0 {
				t.Errorf("close: %v", e)
			}
			if got := h.content(ino); got != strings.Repeat("x", 200) {
				t.Errorf("%s holds %q", name, got)
			}
		}()
	}
	for range 50 {
		if err := m.FlushHome(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}

// Every read passes the barrier once, ENOENT included; reads and writes
// on an open handle do not.
func TestHomeBarriers(t *testing.T) {
	h := newMemHome(t)
	h.put("f", "data")
	if _, err := h.Create(context.Background(), 1, "l", HomeSymlink, 0o777, 0, 0, "f"); err != nil {
		t.Fatal(err)
	}
	_, root := homeTree(h)
	n, _ := hlookup(t, root, "f")
	l, _ := hlookup(t, root, "l")
	w := hopen(t, n, syscall.O_RDWR)
	ctx := context.Background()
	var eo fuse.EntryOut
	var ao fuse.AttrOut
	cases := []struct {
		name     string
		op       func() syscall.Errno
		want     syscall.Errno
		barriers int64
	}{
		{"lookup", func() syscall.Errno { _, e := root.Lookup(ctx, "f", &eo); return e }, 0, 1},
		{"lookup of nothing", func() syscall.Errno { _, e := root.Lookup(ctx, "none", &eo); return e }, syscall.ENOENT, 1},
		{"getattr", func() syscall.Errno { return n.Getattr(ctx, nil, &ao) }, 0, 1},
		{"readdir", func() syscall.Errno { _, e := root.Readdir(ctx); return e }, 0, 1},
		{"readlink", func() syscall.Errno { _, e := l.Readlink(ctx); return e }, 0, 1},
		{"open", func() syscall.Errno { _, _, e := n.Open(ctx, syscall.O_RDONLY); return e }, 0, 1},
		{"read", func() syscall.Errno { _, e := n.Read(ctx, w, make([]byte, 8), 0); return e }, 0, 0},
		{"write", func() syscall.Errno { return hwrite(t, n, w, 0, "D") }, 0, 0},
		{"close", func() syscall.Errno { return n.Flush(ctx, w) }, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := h.fresh.Load()
			if e := c.op(); e != c.want {
				t.Fatalf("errno %v, want %v", e, c.want)
			}
			if got := h.fresh.Load() - before; got != c.barriers {
				t.Fatalf("%d barriers, want %d", got, c.barriers)
			}
		})
	}
	if got := hread(t, n, 0, 8); !bytes.Equal([]byte(got), []byte("Data")) {
		t.Fatalf("read %q", got)
	}
}
