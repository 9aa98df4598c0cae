package fs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// inoHomeBase offsets the backend's inode numbers into their own range.
const inoHomeBase = 0xC << 60

// maxBatch is how much written data a node gathers before it commits it
// as one entry: one Raft entry per FUSE write would be slow.
const maxBatch = 1 << 20

// maxExtents also ends a batch: scattered small writes make many extents,
// and an entry holds at most 65536 of them.
const maxExtents = 4096

// maxFlight bounds the full batches of one inode that are on their way
// to the quorum at once. While they travel, the writer goes on filling the
// next one, and the leader stores several in one log write (group
// commit): measured writing 384 MiB three times on one node, 25/46/64
// MB/s one at a time, 39/76/101 with 8, 50-66/91-137/96-156 with 16.
const maxFlight = 16

// homeFS is the state shared by the home's nodes on this machine.
type homeFS struct {
	h Home

	mu      sync.Mutex // protects pending
	pending map[uint64]*batch

	// orphanMu serialises moving a file to the orphans with the release
	// of its last handle, so that the release finds it there.
	orphanMu sync.Mutex
	omu      sync.Mutex        // protects opens, orphans and cached
	opens    map[uint64]int    // open handles per inode on this node
	orphans  map[uint64]string // unlinked while open here: name in orphanDir
	cached   map[uint64]uint64 // data version the kernel's page cache holds
}

func newHomeFS(h Home) *homeFS {
	return &homeFS{h: h, pending: map[uint64]*batch{}, opens: map[uint64]int{},
		orphans: map[uint64]string{}, cached: map[uint64]uint64{}}
}

// batch is data written to one inode and not yet acknowledged. A full
// batch is sent at once, without waiting for the quorum; reads, getattr,
// fsync, close and truncate of that inode wait for everything sent and
// commit the rest, so a process reads its own writes and close returns
// only once every byte is on a quorum. A failure of a batch sent ahead
// is reported by the next write, fsync or close of the inode.
type batch struct {
	mu      sync.Mutex // protects the fields below; serialises commits of this inode
	extents []Extent
	size    int
	flying  []*flight // sent, oldest first
	err     error     // the first failure of a flight not yet reported
}

// flight is one batch on its way to the quorum.
type flight struct {
	lo, hi uint64 // the bytes it writes lie in [lo, hi)
	done   chan struct{}
	err    error // set before done is closed
}

// span returns the range that holds every byte ext writes.
func span(ext []Extent) (lo, hi uint64) {
	lo = ^uint64(0)
	for _, e := range ext {
		lo, hi = min(lo, e.Off), max(hi, e.Off+uint64(len(e.Data)))
	}
	return lo, hi
}

func (f *homeFS) batchOf(ino uint64) *batch {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.pending[ino]
	if b == nil {
		b = &batch{}
		f.pending[ino] = b
	}
	return b
}

// add queues data; a full batch is sent.
func (f *homeFS) add(ctx context.Context, ino uint64, off uint64, data []byte) error {
	b := f.batchOf(ino)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.takeErr(); err != nil {
		return err
	}
	if n := len(b.extents); n > 0 {
		last := &b.extents[n-1]
		if last.Off+uint64(len(last.Data)) == off {
			last.Data = append(last.Data, data...)
			b.size += len(data)
			return f.sendLocked(ctx, ino, b)
		}
	}
	// A large write starts what is likely a sequential batch: room for the
	// whole batch now saves copying it again at each doubling.
	buf := make([]byte, 0, len(data))
	if len(data) >= 64<<10 && len(b.extents) == 0 {
		buf = make([]byte, 0, max(len(data), maxBatch))
	}
	b.extents = append(b.extents, Extent{Off: off, Data: append(buf, data...)})
	b.size += len(data)
	return f.sendLocked(ctx, ino, b)
}

// sendLocked sends a full batch without waiting for its commit, once no
// earlier flight writes the same bytes and fewer than maxFlight travel.
func (f *homeFS) sendLocked(ctx context.Context, ino uint64, b *batch) error {
	if b.size < maxBatch && len(b.extents) < maxExtents {
		return nil
	}
	ext := b.extents
	b.extents, b.size = nil, 0
	// Batches that may write the same bytes must reach the log in order:
	// the later one waits. Spans keep the check cheap; scattered writes
	// overlap and so go one batch at a time, sequential ones do not.
	lo, hi := span(ext)
	for i := len(b.flying) - 1; i >= 0; i-- {
		if fl := b.flying[i]; fl.lo < hi && lo < fl.hi {
			b.wait(i + 1)
			break
		}
	}
	if len(b.flying) >= maxFlight {
		b.wait(len(b.flying) - maxFlight + 1)
	}
	fl := &flight{lo: lo, hi: hi, done: make(chan struct{})}
	b.flying = append(b.flying, fl)
	// The request's context ends with this write; the batch outlives it
	// and the backend bounds how long it waits.
	ctx = context.WithoutCancel(ctx)
	go func() {
		fl.err = f.h.Write(ctx, ino, ext)
		close(fl.done)
	}()
	return b.takeErr()
}

// wait waits for the oldest n flights and forgets them, keeping the first
// failure.
func (b *batch) wait(n int) {
	for _, fl := range b.flying[:n] {
		<-fl.done
		if fl.err != nil && b.err == nil {
			b.err = fl.err
		}
	}
	b.flying = append(b.flying[:0], b.flying[n:]...)
}

// takeErr returns the failure of a flight that landed, once.
func (b *batch) takeErr() error {
	n := 0
	for n < len(b.flying) && isDone(b.flying[n].done) {
		n++
	}
	if n > 0 {
		b.wait(n)
	}
	err := b.err
	b.err = nil
	return err
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// commit waits for what was sent for ino and writes out the rest.
func (f *homeFS) commit(ctx context.Context, ino uint64) error {
	f.mu.Lock()
	b := f.pending[ino]
	f.mu.Unlock()
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.wait(len(b.flying))
	if err := b.takeErr(); err != nil {
		// What is still pending was written after the failure: refuse it
		// too rather than leave a file with a gap.
		b.extents, b.size = nil, 0
		return err
	}
	if len(b.extents) == 0 {
		return nil
	}
	ext := b.extents
	b.extents, b.size = nil, 0
	return f.h.Write(ctx, ino, ext)
}

// homeNode is a file, directory or symlink of /cluster/home.
type homeNode struct {
	gofs.Inode
	fs  *homeFS
	ino uint64 // the backend's
}

var (
	_ = (gofs.NodeLookuper)((*homeNode)(nil))
	_ = (gofs.NodeGetattrer)((*homeNode)(nil))
	_ = (gofs.NodeSetattrer)((*homeNode)(nil))
	_ = (gofs.NodeReaddirer)((*homeNode)(nil))
	_ = (gofs.NodeMkdirer)((*homeNode)(nil))
	_ = (gofs.NodeCreater)((*homeNode)(nil))
	_ = (gofs.NodeSymlinker)((*homeNode)(nil))
	_ = (gofs.NodeLinker)((*homeNode)(nil))
	_ = (gofs.NodeReadlinker)((*homeNode)(nil))
	_ = (gofs.NodeUnlinker)((*homeNode)(nil))
	_ = (gofs.NodeRmdirer)((*homeNode)(nil))
	_ = (gofs.NodeRenamer)((*homeNode)(nil))
	_ = (gofs.NodeOpener)((*homeNode)(nil))
	_ = (gofs.NodeReader)((*homeNode)(nil))
	_ = (gofs.NodeWriter)((*homeNode)(nil))
	_ = (gofs.NodeFlusher)((*homeNode)(nil))
	_ = (gofs.NodeFsyncer)((*homeNode)(nil))
	_ = (gofs.NodeReleaser)((*homeNode)(nil))
	_ = (gofs.NodeStatfser)((*homeNode)(nil))
)

func fillAttr(a HomeAttr, out *fuse.Attr) {
	out.Ino = inoHomeBase | a.Ino
	out.Size = a.Size
	out.Blocks = (a.Size + 511) / 512
	out.Nlink = a.Nlink
	out.Uid, out.Gid = a.UID, a.GID
	out.Mode = a.Mode | kindMode(a.Kind)
	out.SetTimes(&a.Atime, &a.Mtime, &a.Ctime)
	out.Blksize = 128 << 10
}

func kindMode(k HomeKind) uint32 {
	switch k {
	case HomeDir:
		return syscall.S_IFDIR
	case HomeSymlink:
		return syscall.S_IFLNK
	}
	return syscall.S_IFREG
}

// child makes the inode for a, with zero cache timeouts: another node may
// change it at any time, and close-to-open needs fresh sizes.
func (n *homeNode) child(ctx context.Context, a HomeAttr, out *fuse.EntryOut) *gofs.Inode {
	fillAttr(a, &out.Attr)
	out.SetEntryTimeout(0)
	out.SetAttrTimeout(0)
	return n.NewInode(ctx, &homeNode{fs: n.fs, ino: a.Ino},
		gofs.StableAttr{Mode: kindMode(a.Kind), Ino: inoHomeBase | a.Ino})
}

func caller(ctx context.Context) (uid, gid uint32) {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Uid, c.Gid
	}
	return 0, 0
}

func (n *homeNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.hidden(name) {
		return nil, syscall.ENOENT
	}
	a, err := n.fs.h.Lookup(n.ino, name)
	if err != nil {
		return nil, errno(err)
	}
	// The kernel takes the size from a lookup too, and an O_APPEND write
	// lands where that size says: writes buffered here must count first.
	if err := n.fs.commit(ctx, a.Ino); err != nil {
		return nil, errno(err)
	}
	if a, err = n.fs.h.Getattr(a.Ino); err != nil {
		return nil, errno(err)
	}
	return n.child(ctx, a, out), 0
}

func (n *homeNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if err := n.fs.commit(ctx, n.ino); err != nil {
		return errno(err)
	}
	a, err := n.fs.h.Getattr(n.ino)
	if err != nil {
		return errno(err)
	}
	fillAttr(a, &out.Attr)
	if n.fs.orphaned(n.ino) {
		out.Nlink = 0 // unlinked, still open here
	}
	out.SetTimeout(0)
	return 0
}

func (n *homeNode) Setattr(ctx context.Context, _ gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if err := n.fs.commit(ctx, n.ino); err != nil {
		return errno(err)
	}
	var sa HomeSetAttr
	if m, ok := in.GetMode(); ok {
		m &= 0o7777
		sa.Mode = &m
	}
	if u, ok := in.GetUID(); ok {
		sa.UID = &u
	}
	if g, ok := in.GetGID(); ok {
		sa.GID = &g
	}
	if s, ok := in.GetSize(); ok {
		sa.Size = &s
	}
	if t, ok := in.GetATime(); ok {
		sa.Atime = &t
	}
	if t, ok := in.GetMTime(); ok {
		sa.Mtime = &t
	}
	if err := n.fs.h.SetAttr(ctx, n.ino, sa); err != nil {
		return errno(err)
	}
	return n.Getattr(ctx, nil, out)
}

func (n *homeNode) Readdir(context.Context) (gofs.DirStream, syscall.Errno) {
	ents, err := n.fs.h.Readdir(n.ino)
	if err != nil {
		return nil, errno(err)
	}
	out := make([]fuse.DirEntry, 0, len(ents))
	for _, e := range ents {
		if n.hidden(e.Name) {
			continue
		}
		out = append(out, fuse.DirEntry{Name: e.Name, Ino: inoHomeBase | e.Ino, Mode: kindMode(e.Kind)})
	}
	return gofs.NewListDirStream(out), 0
}

func (n *homeNode) create(ctx context.Context, name string, kind HomeKind, mode uint32, target string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.hidden(name) {
		return nil, syscall.EPERM
	}
	uid, gid := caller(ctx)
	a, err := n.fs.h.Create(ctx, n.ino, name, kind, mode&0o7777, uid, gid, target)
	if err != nil {
		return nil, errno(err)
	}
	return n.child(ctx, a, out), 0
}

func (n *homeNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.create(ctx, name, HomeDir, mode, "", out)
}

func (n *homeNode) Create(ctx context.Context, name string, _ uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	in, e := n.create(ctx, name, HomeFile, mode, "", out)
	if e != 0 {
		return nil, nil, 0, e
	}
	ino := in.StableAttr().Ino &^ inoHomeBase
	n.fs.opened(ino)
	return in, &homeHandle{ino: ino}, 0, 0
}

func (n *homeNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.create(ctx, name, HomeSymlink, 0o777, target, out)
}

func (n *homeNode) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	t, ok := target.(*homeNode)
	if !ok {
		return nil, syscall.EXDEV
	}
	if n.hidden(name) {
		return nil, syscall.EPERM
	}
	a, err := n.fs.h.Link(ctx, t.ino, n.ino, name)
	if err != nil {
		return nil, errno(err)
	}
	return n.child(ctx, a, out), 0
}

func (n *homeNode) Readlink(context.Context) ([]byte, syscall.Errno) {
	t, err := n.fs.h.Readlink(n.ino)
	if err != nil {
		return nil, errno(err)
	}
	return []byte(t), 0
}

// Unlink of a file's last link while this node holds it open moves it to
// the hidden orphan directory instead, where it stays until the last
// handle on this node is released: its holders go on reading and writing
// it, as on a local file system.
func (n *homeNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if n.hidden(name) {
		return syscall.EPERM
	}
	if a, err := n.fs.h.Lookup(n.ino, name); err == nil && a.Kind == HomeFile && a.Nlink == 1 {
		if moved, err := n.fs.orphan(ctx, n.ino, name, a.Ino); moved || err != nil {
			return errno(err)
		}
	}
	return errno(n.fs.h.Unlink(ctx, n.ino, name))
}

func (n *homeNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	if n.hidden(name) {
		return syscall.EPERM
	}
	return errno(n.fs.h.Rmdir(ctx, n.ino, name))
}

func (n *homeNode) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*homeNode)
	if !ok {
		return syscall.EXDEV
	}
	if flags != 0 {
		return syscall.EINVAL // RENAME_EXCHANGE / NOREPLACE: not supported
	}
	if n.hidden(name) || np.hidden(newName) {
		return syscall.EPERM
	}
	return errno(n.fs.h.Rename(ctx, n.ino, name, np.ino, newName))
}

// Open waits until this replica holds everything committed before it:
// a file closed on node1 and then opened on node2 shows node1's data.
// The kernel keeps its cached pages of the file only if the data did not
// change since it cached them (the same Version); otherwise it drops them.
func (n *homeNode) Open(ctx context.Context, _ uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if err := n.fs.h.Fresh(ctx); err != nil {
		return nil, 0, errno(err)
	}
	a, err := n.fs.h.Getattr(n.ino)
	if err != nil {
		return nil, 0, errno(err)
	}
	n.fs.opened(n.ino)
	return &homeHandle{ino: n.ino}, n.fs.cacheFlags(n.ino, a.Version), 0
}

func (n *homeNode) Read(ctx context.Context, _ gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if err := n.fs.commit(ctx, n.ino); err != nil {
		return nil, errno(err)
	}
	// Into go-fuse's own buffer: no allocation, one copy.
	got, err := n.fs.h.Read(n.ino, uint64(off), dest)
	if err != nil {
		return nil, errno(err)
	}
	return fuse.ReadResultData(dest[:got]), 0
}

func (n *homeNode) Write(ctx context.Context, _ gofs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if err := n.fs.add(ctx, n.ino, uint64(off), data); err != nil {
		return 0, errno(err)
	}
	return uint32(len(data)), 0
}

// Flush (every close) commits: close returns once the data is on a
// quorum, so another node that opens the file next sees it.
func (n *homeNode) Flush(ctx context.Context, _ gofs.FileHandle) syscall.Errno {
	return errno(n.fs.commit(ctx, n.ino))
}

func (n *homeNode) Fsync(ctx context.Context, _ gofs.FileHandle, _ uint32) syscall.Errno {
	return errno(n.fs.commit(ctx, n.ino))
}

func (n *homeNode) Release(ctx context.Context, _ gofs.FileHandle) syscall.Errno {
	err := n.fs.commit(ctx, n.ino)
	n.fs.released(context.WithoutCancel(ctx), n.ino)
	return errno(err)
}

func (n *homeNode) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno {
	u := n.fs.h.Statfs()
	const bsize = 4096
	total := u.Quota
	if total == 0 {
		total = 1 << 50 // unlimited: report a large file system
	}
	out.Bsize, out.Frsize = bsize, bsize
	out.Blocks = total / bsize
	free := uint64(0)
	if total > u.Used {
		free = (total - u.Used) / bsize
	}
	out.Bfree, out.Bavail = free, free
	out.Files = u.Inodes + 1<<20
	out.Ffree = 1 << 20
	out.NameLen = 255
	return 0
}

// homeHandle is an open file. The node's methods do the work; the handle
// exists so that go-fuse calls Release for every open (it does not for
// an open without a handle), which counts this node's holders.
type homeHandle struct{ ino uint64 }

// orphanDir is the root's hidden directory where a file unlinked while
// open on this node waits for its last release (NFS's "silly rename",
// out of sight): named NODE.INO, so that NODE's next start removes what a
// crash left behind.
const orphanDir = ".ssi-orphans"

// hidden reports a name that only homeFS itself uses.
func (n *homeNode) hidden(name string) bool { return n.ino == 1 && name == orphanDir }

func (f *homeFS) opened(ino uint64) {
	f.omu.Lock()
	defer f.omu.Unlock()
	f.opens[ino]++
}

func (f *homeFS) orphaned(ino uint64) bool {
	f.omu.Lock()
	defer f.omu.Unlock()
	_, ok := f.orphans[ino]
	return ok
}

// cacheFlags answers an open of ino whose data is at version v: keep the
// kernel's cached pages if they are of v, else let it drop them.
func (f *homeFS) cacheFlags(ino, v uint64) uint32 {
	f.omu.Lock()
	defer f.omu.Unlock()
	if old, ok := f.cached[ino]; ok && old == v {
		return fuse.FOPEN_KEEP_CACHE
	}
	f.cached[ino] = v
	return 0
}

// orphan moves file ino, called name in parent, to the orphans if this
// node holds it open; moved reports whether it did.
func (f *homeFS) orphan(ctx context.Context, parent uint64, name string, ino uint64) (moved bool, err error) {
	f.orphanMu.Lock()
	defer f.orphanMu.Unlock()
	f.omu.Lock()
	open := f.opens[ino] > 0
	f.omu.Unlock()
	if !open {
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
	f.omu.Lock()
	f.opens[ino]--
	oname, orphan := f.orphans[ino]
	last := f.opens[ino] <= 0
	if last {
		delete(f.opens, ino)
		delete(f.orphans, ino)
	}
	f.omu.Unlock()
	if !last || !orphan {
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
