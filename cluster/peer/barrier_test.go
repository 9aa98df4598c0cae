package peer

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"ssi/raftstore"
)

// On the leader the barrier passes, every read is measured, and the
// switch turns it off.
func TestBarrierOnLeader(t *testing.T) {
	m := newMember(t)
	ctx := testContext(t)
	if stale, err := m.c.Fresh(ctx); stale || err != nil || m.c.Stale() {
		t.Fatalf("Fresh = %v, %v", stale, err)
	}
	if m.stats.waits.Load() != 1 {
		t.Fatalf("%d barrier waits measured, want 1", m.stats.waits.Load())
	}
	if err := m.c.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	m.c.SetBarrier(false)
	if stale, err := m.c.Fresh(ctx); stale || err != nil || m.stats.waits.Load() != 1 {
		t.Fatalf("without the barrier: %v, %v, %d waits", stale, err, m.stats.waits.Load())
	}
	m.c.SetBarrier(true)

	read := m.c.FreshRead(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	rec := httptest.NewRecorder()
	read(rec, httptest.NewRequest(http.MethodGet, "/v1/procs", nil))
	if rec.Code != http.StatusTeapot {
		t.Fatalf("read behind the barrier: %d", rec.Code)
	}
}

// A barrier that finds no quorum makes the read stale (counted, said
// once); the next one that passes makes reads linearizable again. A
// reader that gave up, or a closed store, is an error, not staleness.
func TestStaleAndBack(t *testing.T) {
	m := newMember(t)
	ctx := testContext(t)
	if stale, err := m.c.failed(ctx, raftstore.ErrTimeout); !stale || err != nil || !m.c.Stale() {
		t.Fatalf("no quorum: %v, %v", stale, err)
	}
	if m.stats.stale.Load() != 1 {
		t.Fatal("stale read not counted")
	}
	if stale, err := m.c.Fresh(ctx); stale || err != nil || m.c.Stale() {
		t.Fatalf("after the heal: %v, %v, stale %v", stale, err, m.c.Stale())
	}
	if _, err := m.c.failed(ctx, raftstore.ErrClosed); !errors.Is(err, raftstore.ErrClosed) {
		t.Fatalf("closed: %v", err)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if stale, err := m.c.failed(gone, raftstore.ErrTimeout); stale || !errors.Is(err, context.Canceled) || m.c.Stale() {
		t.Fatalf("reader gone: %v, %v", stale, err)
	}
}

// A follower's barrier round asks the leader's /v1/applied over the
// cluster port.
func TestAskReadIndex(t *testing.T) {
	m := newMember(t)
	idx, err := m.c.AskReadIndex(testContext(t))
	if err != nil || idx == 0 || idx > m.s.LastIndex() {
		t.Fatalf("AskReadIndex = %d, %v (last index %d)", idx, err, m.s.LastIndex())
	}
	if _, err := m.c.firstReadIndex(testContext(t), nil); err == nil {
		t.Fatal("asked nobody and got an answer")
	}
}
