package fs

import (
	"context"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// inoHomeBase offsets the backend's inode numbers into their own range.
const inoHomeBase = 0xC << 60

// homeFS is the state shared by the home's nodes on this machine.
//
// One rule for every read (lookup, its ENOENT included, getattr, readdir,
// readlink, open): it first passes the backend's read barrier (Fresh),
// then answers from the replica, so that it reflects every write that
// returned on any node before it started; the kernel is told to keep
// nothing (see cache.go). A read on an open handle need not: its open
// passed the barrier, and the kernel drops its pages if the data changed.
type homeFS struct {
	h Home
	// logf reports what the kernel would act on silently (nil: nobody).
	logf func(format string, args ...any)

	mu      sync.Mutex // protects pending and the batches' handles
	pending map[uint64]*batch

	// orphanMu serialises moving a file to the orphans with the release
	// of its last handle, so that the release finds it there.
	orphanMu sync.Mutex
	omu      sync.Mutex        // protects orphans and cached
	orphans  map[uint64]string // unlinked while open here: name in orphanDir
	cached   map[uint64]uint64 // data version the kernel's page cache holds
}

func newHomeFS(h Home) *homeFS {
	return &homeFS{h: h, pending: map[uint64]*batch{},
		orphans: map[uint64]string{}, cached: map[uint64]uint64{}}
}

// getattr is ino in the replica, with the size this node's writers see:
// a buffered append counts, so that O_APPEND from another process here
// lands after it. (Other nodes see the committed size.)
func (f *homeFS) getattr(ino uint64) (HomeAttr, error) {
	var end uint64
	if b := f.batch(ino); b != nil {
		end = b.end() // first: see batch.end
	}
	a, err := f.h.Getattr(ino)
	a.Size = max(a.Size, end)
	return a, err
}

// lookup is name in parent, as getattr sees it.
func (f *homeFS) lookup(parent uint64, name string) (HomeAttr, error) {
	a, err := f.h.Lookup(parent, name)
	if err != nil || f.batch(a.Ino) == nil {
		return a, err
	}
	// Again, now that the inode is known: a flight may have landed
	// between the lookup and the look at what is on its way.
	return f.getattr(a.Ino)
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
	_ = (gofs.NodeGetxattrer)((*homeNode)(nil))
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
// change it at any time, and each lookup and stat must pass the barrier.
// (Zero stays zero: the mount sets no default timeouts, see cache.go.)
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

// Lookup passes the barrier first, so that a name another node just made
// or removed answers the same here; the kernel also takes the size from
// a lookup.
func (n *homeNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.hidden(name) {
		return nil, syscall.ENOENT
	}
	ctx, done := uninterrupted(ctx)
	defer done()
	if err := n.fs.h.Fresh(ctx); err != nil {
		return nil, n.fs.failed("lookup", name, err)
	}
	a, err := n.fs.lookup(n.ino, name)
	if err != nil {
		return nil, n.fs.failed("lookup", name, err)
	}
	return n.child(ctx, a, out), 0
}

// failed is err's errno for an operation on name. Besides ENOENT and
// EINTR, the kernel takes a failed lookup of a name it knows as the
// name gone and unhashes its dentry, so that a file held open there
// reads "(deleted)" in /proc: say so in the log.
func (f *homeFS) failed(op, name string, err error) syscall.Errno {
	e := errno(err)
	if e != syscall.ENOENT && e != syscall.EINTR && f.logf != nil {
		f.logf("home %s of %q failed with %v: %v", op, name, e, err)
	}
	return e
}

func (n *homeNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ctx, done := uninterrupted(ctx)
	defer done()
	if err := n.fs.h.Fresh(ctx); err != nil {
		return errno(err)
	}
	return n.attr(out)
}

// attr answers from the replica as it is: after the barrier, or after a
// change this node made.
func (n *homeNode) attr(out *fuse.AttrOut) syscall.Errno {
	a, err := n.fs.getattr(n.ino)
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

// Setattr commits what is buffered first: a truncate (or a time set)
// must come after the writes made before it. A failure goes to the
// caller and stays for the writers.
func (n *homeNode) Setattr(ctx context.Context, _ gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	ctx, done := uninterrupted(ctx)
	defer done()
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
	return n.attr(out) // SetAttr returns once this replica holds it
}

func (n *homeNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ctx, done := uninterrupted(ctx)
	defer done()
	if err := n.fs.h.Fresh(ctx); err != nil {
		return nil, errno(err)
	}
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
	ctx, done := uninterrupted(ctx)
	defer done()
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

func (n *homeNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	in, e := n.create(ctx, name, HomeFile, mode, "", out)
	if e != 0 {
		return nil, nil, 0, e
	}
	ino := in.StableAttr().Ino &^ inoHomeBase
	return in, n.fs.opened(ino).handle(ino, writes(flags)), 0, 0
}

func writes(flags uint32) bool { return flags&syscall.O_ACCMODE != syscall.O_RDONLY }

func (n *homeNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.create(ctx, name, HomeSymlink, 0o777, target, out)
}

func (n *homeNode) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ctx, done := uninterrupted(ctx)
	defer done()
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

func (n *homeNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	ctx, done := uninterrupted(ctx)
	defer done()
	if err := n.fs.h.Fresh(ctx); err != nil {
		return nil, errno(err)
	}
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
	ctx, done := uninterrupted(ctx)
	defer done()
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
	ctx, done := uninterrupted(ctx)
	defer done()
	if n.hidden(name) {
		return syscall.EPERM
	}
	return errno(n.fs.h.Rmdir(ctx, n.ino, name))
}

func (n *homeNode) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	ctx, done := uninterrupted(ctx)
	defer done()
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

// Open passes the barrier: a file closed on node1 and then opened on
// node2 shows node1's data. The kernel keeps its cached pages of the file
// only if the data did not change since it cached them (the same
// Version); otherwise it drops them.
func (n *homeNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	ctx, done := uninterrupted(ctx)
	defer done()
	if err := n.fs.h.Fresh(ctx); err != nil {
		return nil, 0, errno(err)
	}
	a, err := n.fs.h.Getattr(n.ino)
	if err != nil {
		return nil, 0, errno(err)
	}
	h := n.fs.opened(n.ino).handle(n.ino, writes(flags))
	return h, n.fs.cacheFlags(n.ino, a.Version), 0
}

// Read answers from the replica, with what this node's writers have not
// yet seen land laid over it: it never commits another process's writes.
func (n *homeNode) Read(_ context.Context, _ gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	// Into go-fuse's own buffer: no allocation, one copy.
	got, err := n.fs.read(n.ino, uint64(off), dest)
	if err != nil {
		return nil, errno(err)
	}
	return fuse.ReadResultData(dest[:got]), 0
}

// Write buffers data, unless this handle has a failure to hear of first:
// then the write fails and buffers nothing.
func (n *homeNode) Write(ctx context.Context, fh gofs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	h, ok := fh.(*homeHandle)
	if !ok {
		return 0, syscall.EBADF
	}
	if err := h.b.check(h); err != nil {
		return 0, errno(err)
	}
	n.fs.add(ctx, n.ino, h.b, uint64(off), data)
	return uint32(len(data)), 0
}

// Flush (every close) of a writer commits: close returns once the data is
// on a quorum, so another node that opens the file next sees it, or with
// the failure this handle has not yet heard of. A reader's close neither
// commits nor fails (as on NFS).
func (n *homeNode) Flush(ctx context.Context, fh gofs.FileHandle) syscall.Errno {
	h, ok := fh.(*homeHandle)
	if !ok || !h.writer {
		return 0
	}
	ctx, done := uninterrupted(ctx)
	defer done()
	return errno(n.fs.sync(ctx, h))
}

// Fsync commits from any handle, as fsync of a read-only descriptor does
// on Linux, and reports to that handle.
func (n *homeNode) Fsync(ctx context.Context, fh gofs.FileHandle, _ uint32) syscall.Errno {
	ctx, done := uninterrupted(ctx)
	defer done()
	h, ok := fh.(*homeHandle)
	if !ok {
		return syscall.EBADF
	}
	return errno(n.fs.sync(ctx, h))
}

// Release commits what a writer left (after a close that was
// interrupted, say); nobody hears of its answer, but a failure stays
// recorded for the inode's other handles.
func (n *homeNode) Release(ctx context.Context, fh gofs.FileHandle) syscall.Errno {
	h, ok := fh.(*homeHandle)
	if !ok {
		return 0
	}
	if h.writer {
		_ = n.fs.commitBatch(ctx, h.ino, h.b)
	}
	h.b.drop(h)
	n.fs.released(context.WithoutCancel(ctx), n.ino)
	return 0
}

// Getxattr says the home keeps no extended attributes at all. go-fuse
// would answer ENODATA (this one is absent), so tools ask again for every
// file, each time walking the path once more: a getattr of the directory
// and a lookup, both behind the barrier. On ENOSYS the kernel stops
// asking for the whole mount (it answers EOPNOTSUPP itself) and ls stops
// asking for the SELinux label: `ls -l` of 100 files passed 704
// barriers, 504 with this (TestMountedHomeListing).
func (n *homeNode) Getxattr(context.Context, string, []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
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

// homeHandle is an open file: the failures it has heard of, and whether it
// writes. go-fuse also calls Release only for an open with a handle,
// which counts this node's holders.
type homeHandle struct {
	ino    uint64
	b      *batch // the inode's, shared by its handles
	writer bool
	seen   uint64 // the batch's seq it has reported; protected by b.mu
}
