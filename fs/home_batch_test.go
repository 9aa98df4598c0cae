package fs

import (
	"bytes"
	"context"
	"slices"
	"testing"
)

// Full batches travel while the writer goes on; an overlapping batch
// waits for the one it overlaps and no other; a failure reaches the
// writer once; commit waits for all.
//
// Each write is held and let go one by one: the version of this test that
// let the fake's writes take turns on one unbuffered channel hung (its
// loop waiting for the failure could fill and send a fourth batch, which
// then waited for a verdict nobody sent).
func TestHomeBatchesPipeline(t *testing.T) {
	h := newMemHome(t)
	h.hold.Store(true)
	f := newHomeFS(h)
	ino := h.put("f", "")
	b := f.opened(ino)
	w := b.handle(ino, true)
	ctx := context.Background()
	full := bytes.Repeat([]byte("a"), maxBatch)

	// Two full batches are both sent before either lands.
	f.add(ctx, ino, b, 0, full)
	first := h.nextWrite(t)
	f.add(ctx, ino, b, maxBatch, full)
	second := h.nextWrite(t)
	if first.ext[0].Off != 0 || second.ext[0].Off != maxBatch {
		t.Fatalf("sent batches at %d and %d", first.ext[0].Off, second.ext[0].Off)
	}

	// A third one rewriting offset 0 waits for the first to land, not for
	// the second.
	third := start(func() error { f.add(ctx, ino, b, 0, full); return nil })
	h.noWrite(t)
	second.land()
	h.noWrite(t)
	first.land()
	if err := await(t, "the third write", third); err != nil {
		t.Fatal(err)
	}
	refused := h.nextWrite(t)
	if refused.ext[0].Off != 0 {
		t.Fatalf("third batch at %d", refused.ext[0].Off)
	}

	// It fails: the writer hears of it once.
	refused.refuse(ErrNoQuorum)
	failed(t, b, 1)
	if err := b.check(w); err != ErrNoQuorum {
		t.Fatalf("the writer's next check: %v, want the failure", err)
	}
	if err := b.check(w); err != nil {
		t.Fatalf("the check after: %v, want nothing", err)
	}

	// Commit sends the rest and returns once it landed.
	f.add(ctx, ino, b, 10*maxBatch, []byte("x"))
	done := start(func() error { return f.commit(ctx, ino) })
	last := h.nextWrite(t)
	if last.ext[0].Off != 10*maxBatch {
		t.Fatalf("commit sent a batch at %d", last.ext[0].Off)
	}
	last.land()
	if err := await(t, "commit", done); err != nil {
		t.Fatal(err)
	}
	if got, want := h.landedOffsets(), []uint64{maxBatch, 0, 10 * maxBatch}; !slices.Equal(got, want) {
		t.Fatalf("landed at %v, want %v", got, want)
	}
}

// Scattered small writes end a batch at maxExtents extents (an entry
// holds at most 65536), and such batches travel one at a time.
func TestHomeBatchesScattered(t *testing.T) {
	h := newMemHome(t)
	h.hold.Store(true)
	f := newHomeFS(h)
	ino := h.put("f", "")
	b := f.opened(ino)
	ctx := context.Background()
	done := start(func() error {
		for i := 0; i < 2*maxExtents; i++ {
			// Even bytes first, then the odd ones in between.
			off := uint64(i%maxExtents)*2 + uint64(i/maxExtents)
			f.add(ctx, ino, b, off, []byte("x"))
		}
		return nil
	})
	first := h.nextWrite(t)
	if len(first.ext) != maxExtents {
		t.Fatalf("a batch of %d extents, want %d", len(first.ext), maxExtents)
	}
	h.noWrite(t) // the second lies within the first's span: it waits
	first.land()
	second := h.nextWrite(t)
	if second.ext[0].Off != 1 {
		t.Fatalf("second batch at %d, want 1", second.ext[0].Off)
	}
	second.land()
	if err := await(t, "the writes", done); err != nil {
		t.Fatal(err)
	}
}

// overlay lays buffered bytes over what the replica returned, later
// writes over earlier ones, a hole reading as zeros.
func TestHomeOverlay(t *testing.T) {
	ext := func(off uint64, s string) Extent { return Extent{Off: off, Data: []byte(s)} }
	cases := []struct {
		name    string
		replica string // what the replica returned from off
		off     uint64
		len     int
		fls     [][]Extent
		ext     []Extent
		want    string
	}{
		{"nothing", "abcdef", 0, 6, nil, nil, "abcdef"},
		{"inside", "abcdef", 0, 6, nil, []Extent{ext(2, "XY")}, "abXYef"},
		{"later wins", "abcdef", 0, 6, [][]Extent{{ext(1, "11")}}, []Extent{ext(2, "2")}, "a12def"},
		{"past the end", "abc", 0, 8, nil, []Extent{ext(5, "Z")}, "abc\x00\x00Z"},
		{"beyond the window", "abc", 0, 5, nil, []Extent{ext(9, "Z")}, "abc\x00\x00"},
		{"before the window", "cdef", 2, 4, nil, []Extent{ext(0, "AB")}, "cdef"},
		{"straddles off", "cdef", 2, 4, nil, []Extent{ext(1, "XYZ")}, "YZef"},
		{"short replica, in flight", "", 4, 4, [][]Extent{{ext(0, "0123456789")}}, nil, "4567"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var fls []*flight
			for _, e := range c.fls {
				fls = append(fls, &flight{ext: e})
			}
			dest := bytes.Repeat([]byte("?"), c.len)
			n := copy(dest, c.replica)
			got := dest[:overlay(dest, c.off, n, fls, c.ext)]
			if string(got) != c.want {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
}
