package fs

import (
	"context"
	"sort"
	"sync"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// treeHome is a Home holding only names: enough for the orphan
// bookkeeping. Directory 1 is the root; new directories get 100, 101...
type treeHome struct {
	Home // nil: other calls panic

	mu    sync.Mutex
	names map[uint64]map[string]uint64
	next  uint64
}

func newTreeHome() *treeHome {
	return &treeHome{names: map[uint64]map[string]uint64{1: {}}, next: 100}
}

func (h *treeHome) Node() string { return "n1" }

func (h *treeHome) Lookup(parent uint64, name string) (HomeAttr, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ino, ok := h.names[parent][name]
	if !ok {
		return HomeAttr{}, ErrNotFound
	}
	return HomeAttr{Ino: ino, Nlink: 1}, nil
}

func (h *treeHome) Readdir(ino uint64) ([]HomeEntry, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []HomeEntry
	for name, i := range h.names[ino] {
		out = append(out, HomeEntry{Name: name, Ino: i})
	}
	return out, nil
}

func (h *treeHome) Create(_ context.Context, parent uint64, name string, _ HomeKind, _, _, _ uint32, _ string) (HomeAttr, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.names[parent][name]; ok {
		return HomeAttr{}, ErrExists
	}
	ino := h.next
	h.next++
	h.names[parent][name] = ino
	h.names[ino] = map[string]uint64{}
	return HomeAttr{Ino: ino, Kind: HomeDir}, nil
}

func (h *treeHome) Rename(_ context.Context, op uint64, on string, np uint64, nn string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	ino, ok := h.names[op][on]
	if !ok {
		return ErrNotFound
	}
	delete(h.names[op], on)
	h.names[np][nn] = ino
	return nil
}

func (h *treeHome) Unlink(_ context.Context, parent uint64, name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.names[parent][name]; !ok {
		return ErrNotFound
	}
	delete(h.names[parent], name)
	return nil
}

func (h *treeHome) list(dir uint64) []string {
	ents, _ := h.Readdir(dir)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name)
	}
	sort.Strings(out)
	return out
}

func TestHomeCacheFlags(t *testing.T) {
	f := newHomeFS(newTreeHome())
	for i, c := range []struct {
		version uint64
		want    uint32
	}{{3, 0}, {3, fuse.FOPEN_KEEP_CACHE}, {4, 0}, {4, fuse.FOPEN_KEEP_CACHE}, {3, 0}} {
		if got := f.cacheFlags(9, c.version); got != c.want {
			t.Fatalf("open %d at version %d: flags %#x, want %#x", i, c.version, got, c.want)
		}
	}
}

// An unlink of a file open here moves it to the orphans until its last
// release; a sweep removes this node's leftovers and nothing else.
func TestHomeOrphans(t *testing.T) {
	h := newTreeHome()
	h.names[1]["open"], h.names[1]["closed"] = 5, 6
	f := newHomeFS(h)
	ctx := context.Background()

	if moved, err := f.orphan(ctx, 1, "closed", 6); moved || err != nil {
		t.Fatalf("a file open nowhere: moved %v, %v", moved, err)
	}
	f.opened(5)
	f.opened(5)
	if moved, err := f.orphan(ctx, 1, "open", 5); !moved || err != nil {
		t.Fatalf("a file open here: moved %v, %v", moved, err)
	}
	dir, err := h.Lookup(1, orphanDir)
	if err != nil {
		t.Fatal(err)
	}
	// Leftovers of this node's last run and a live orphan of another node.
	h.names[dir.Ino]["n1.77"], h.names[dir.Ino]["n2.78"] = 77, 78
	f.sweepOnce("n1.")
	if got := h.list(dir.Ino); len(got) != 2 || got[0] != "n1.5" || got[1] != "n2.78" {
		t.Fatalf("after a sweep the orphans are %v", got)
	}
	f.released(ctx, 5)
	if got := h.list(dir.Ino); len(got) != 2 || !f.orphaned(5) {
		t.Fatalf("after one of two releases: %v", got)
	}
	f.released(ctx, 5)
	if got := h.list(dir.Ino); len(got) != 1 || got[0] != "n2.78" || f.orphaned(5) {
		t.Fatalf("after the last release: %v", got)
	}
}
