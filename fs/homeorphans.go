package fs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// orphanDir is the root's hidden directory where a file unlinked while
// open on this node waits for its last release (NFS's "silly rename",
// out of sight): named NODE.INO, so that NODE's next start removes what a
// crash left behind.
const orphanDir = ".ssi-orphans"

// hidden reports a name that only homeFS itself uses.
func (n *homeNode) hidden(name string) bool { return n.ino == 1 && name == orphanDir }

// isOpen reports whether this node holds a handle of ino.
func (f *homeFS) isOpen(ino uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.pending[ino]
	return b != nil && b.handles > 0
}

func (f *homeFS) orphaned(ino uint64) bool {
	f.omu.Lock()
	defer f.omu.Unlock()
	_, ok := f.orphans[ino]
	return ok
}

// orphan moves file ino, called name in parent, to the orphans if this
// node holds it open; moved reports whether it did.
func (f *homeFS) orphan(ctx context.Context, parent uint64, name string, ino uint64) (moved bool, err error) {
	f.orphanMu.Lock()
	defer f.orphanMu.Unlock()
	if !f.isOpen(ino) {
		return false, nil
	}
	dir, err := f.orphanDir(ctx)
	if err != nil {
		return false, err
	}
	// Marked first, so that no sweep takes it for a crash's leftover.
	oname := fmt.Sprintf("%s.%d", f.h.Node(), ino)
	f.omu.Lock()
	f.orphans[ino] = oname
	f.omu.Unlock()
	if err := f.h.Rename(ctx, parent, name, dir, oname); err != nil {
		f.omu.Lock()
		delete(f.orphans, ino)
		f.omu.Unlock()
		return false, err
	}
	return true, nil
}

// released forgets a handle of ino; the last one of an orphan removes it.
func (f *homeFS) released(ctx context.Context, ino uint64) {
	f.orphanMu.Lock()
	defer f.orphanMu.Unlock()
	if !f.detach(ino) {
		return
	}
	f.omu.Lock()
	oname, orphan := f.orphans[ino]
	delete(f.orphans, ino)
	f.omu.Unlock()
	if !orphan {
		return
	}
	if dir, err := f.h.Lookup(1, orphanDir); err == nil {
		_ = f.h.Unlink(ctx, dir.Ino, oname) // on failure, the next start removes it
	}
}

// orphanDir returns the orphan directory's inode, making it if needed.
func (f *homeFS) orphanDir(ctx context.Context) (uint64, error) {
	a, err := f.h.Lookup(1, orphanDir)
	if err == nil {
		return a.Ino, nil
	}
	a, err = f.h.Create(ctx, 1, orphanDir, HomeDir, 0o700, 0, 0, "")
	if errors.Is(err, ErrExists) {
		a, err = f.h.Lookup(1, orphanDir)
	}
	return a.Ino, err
}

// sweepOrphans removes, every sweepEvery until done, the orphans tagged
// with this node that it does not hold: what a crash of this node left.
// It goes on after the first sweep because this replica may not yet hold
// the whole tree when the mount starts.
func (f *homeFS) sweepOrphans(done <-chan struct{}) {
	prefix := f.h.Node() + "."
	for {
		f.sweepOnce(prefix)
		select {
		case <-done:
			return
		case <-time.After(sweepEvery):
		}
	}
}

// sweepEvery is how often a node looks for its stale orphans: a lookup in
// the local replica when there are none.
const sweepEvery = 10 * time.Second

func (f *homeFS) sweepOnce(prefix string) {
	dir, err := f.h.Lookup(1, orphanDir)
	if err != nil {
		return
	}
	ents, err := f.h.Readdir(dir.Ino)
	if err != nil {
		return
	}
	// Without orphanMu: a new orphan is marked before it gets its name,
	// and names never repeat (inode numbers are not reused).
	for _, e := range ents {
		if !strings.HasPrefix(e.Name, prefix) || f.orphaned(e.Ino) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_ = f.h.Unlink(ctx, dir.Ino, e.Name) // else the next sweep tries again
		cancel()
	}
}
