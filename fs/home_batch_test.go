package fs

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// recordingHome is a Home whose writes block until released and are
// recorded in the order they land; only Write is used.
type recordingHome struct {
	Home // nil: any other call panics

	mu      sync.Mutex
	landed  [][]Extent
	started chan []Extent // each Write announces itself here
	release chan error    // and returns what it receives
}

func newRecordingHome() *recordingHome {
	return &recordingHome{started: make(chan []Extent, 64), release: make(chan error)}
}

func (h *recordingHome) Write(_ context.Context, _ uint64, ext []Extent) error {
	h.started <- ext
	err := <-h.release
	if err == nil {
		h.mu.Lock()
		h.landed = append(h.landed, ext)
		h.mu.Unlock()
	}
	return err
}

func (h *recordingHome) expectStarted(t *testing.T, off uint64) {
	t.Helper()
	select {
	case ext := <-h.started:
		if ext[0].Off != off {
			t.Fatalf("a batch at %d was sent, want %d", ext[0].Off, off)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no batch at %d was sent", off)
	}
}

func (h *recordingHome) expectIdle(t *testing.T) {
	t.Helper()
	select {
	case ext := <-h.started:
		t.Fatalf("a batch at %d was sent early", ext[0].Off)
	case <-time.After(50 * time.Millisecond):
	}
}

// Full batches travel while the writer goes on; an overlapping batch
// waits for the one it overlaps; commit waits for all and reports a
// failure once.
func TestHomeBatchesPipeline(t *testing.T) {
	h := newRecordingHome()
	f := newHomeFS(h)
	ctx := context.Background()
	full := make([]byte, maxBatch)

	// Two full batches are both sent before either lands.
	if err := f.add(ctx, 7, 0, full); err != nil {
		t.Fatal(err)
	}
	h.expectStarted(t, 0)
	if err := f.add(ctx, 7, maxBatch, full); err != nil {
		t.Fatal(err)
	}
	h.expectStarted(t, maxBatch)

	// A third one rewriting offset 0 waits for the first to land.
	third := make(chan error, 1)
	go func() { third <- f.add(ctx, 7, 0, full) }()
	h.expectIdle(t)
	h.release <- nil // first
	h.release <- nil // second
	h.expectStarted(t, 0)

	// The third fails: the next write hears of it, once.
	h.release <- errors.New("quorum lost")
	if err := <-third; err != nil {
		t.Fatalf("the write that sent the batch: %v", err)
	}
	waitErr := func() error {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if err := f.add(ctx, 7, 10*maxBatch, []byte("x")); err != nil {
				return err
			}
		}
		return nil
	}
	if err := waitErr(); err == nil || err.Error() != "quorum lost" {
		t.Fatalf("a later write: %v, want the failure", err)
	}

	// Commit sends the rest and returns once it landed.
	done := make(chan error, 1)
	go func() { done <- f.commit(ctx, 7) }()
	h.expectStarted(t, 10*maxBatch)
	h.release <- nil
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	// The first two do not overlap: they may land in either order.
	if len(h.landed) != 3 || h.landed[0][0].Off+h.landed[1][0].Off != maxBatch || h.landed[2][0].Off != 10*maxBatch {
		t.Fatalf("landed %d batches, not the first two then the last", len(h.landed))
	}
}

// Scattered small writes end a batch at maxExtents extents (an entry
// holds at most 65536), and such batches travel one at a time.
func TestHomeBatchesScattered(t *testing.T) {
	h := newRecordingHome()
	f := newHomeFS(h)
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		for i := 0; i < 2*maxExtents; i++ {
			// Even bytes first, then the odd ones in between.
			off := uint64(i%maxExtents)*2 + uint64(i/maxExtents)
			if err := f.add(ctx, 3, off, []byte("x")); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	var first []Extent
	select {
	case first = <-h.started:
	case <-time.After(5 * time.Second):
		t.Fatal("no batch was sent")
	}
	if len(first) != maxExtents {
		t.Fatalf("a batch of %d extents, want %d", len(first), maxExtents)
	}
	h.expectIdle(t) // the second lies within the first's span: it waits
	h.release <- nil
	h.expectStarted(t, 1)
	h.release <- nil
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
