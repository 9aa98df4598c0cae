package fs

import (
	"context"
	"hash/fnv"
	"strconv"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Stable inode numbers, derived from the model: the same file has the same
// number on every lookup (and every node).
// The top four bits keep our ranges apart from a path backend's inode
// numbers, which are the underlying file system's.
const (
	inoFixed = 0xF << 60
	inoProc  = inoFixed | 2
	inoNodes = inoFixed | 3
	inoAdmin = inoFixed | 4
	// admin files: inoAdmin+1 ...
	inoProcBase = 0xE << 60 // | cpid<<8 | file
	inoNodeBase = 0xD << 60 // | hash(name)<<8 | file
)

func procIno(cpid int) uint64 { return inoProcBase | uint64(uint32(cpid))<<8 }

func nodeIno(name string) uint64 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return inoNodeBase | uint64(h.Sum32()&0xffffff)<<8
}

// callerUID is the uid of the process that made the request.
func callerUID(ctx context.Context) uint32 {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Uid
	}
	return ^uint32(0)
}

// dir gives the read-only directories their permissions: the mount
// uses the kernel's permission checks (default_permissions) for the home.
func (c cacheTimes) dir(out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o555
	c.attrOut(out)
	return 0
}

// staticDir is a directory whose children are added once (admin).
type staticDir struct {
	gofs.Inode
	cache cacheTimes
}

var _ = (gofs.NodeGetattrer)((*staticDir)(nil))
var _ = (gofs.NodeLookuper)((*staticDir)(nil))

func (d *staticDir) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return d.cache.dir(out)
}

func (d *staticDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return lookupChild(ctx, &d.Inode, name, d.cache.entry, out)
}

// rootNode is /cluster.
type rootNode struct {
	gofs.Inode
	view View
	home *homeFS // the Raft home, or nil
	// homePath serves an existing shared directory (NFS, CephFS, ...)
	// as /cluster/home instead; nil without one.
	homePath gofs.InodeEmbedder
	cfg      *Options
	cache    cacheTimes
}

var _ = (gofs.NodeGetattrer)((*rootNode)(nil))
var _ = (gofs.NodeLookuper)((*rootNode)(nil))

func (r *rootNode) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return r.cache.dir(out)
}

// Lookup answers /cluster's own names, which never change; the attributes
// are the child's (for the home: after the barrier, kept by nobody).
func (r *rootNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return lookupChild(ctx, &r.Inode, name, fixedEntry, out)
}

var _ = (gofs.NodeOnAdder)((*rootNode)(nil))

func (r *rootNode) OnAdd(ctx context.Context) {
	add := func(name string, ino uint64, n gofs.InodeEmbedder) {
		r.AddChild(name, r.NewPersistentInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: ino}), false)
	}
	add("proc", inoProc, &procDir{view: r.view, cache: r.cache})
	add("nodes", inoNodes, &nodesDir{view: r.view, cache: r.cache})
	switch {
	case r.home != nil:
		r.AddChild("home", r.NewPersistentInode(ctx, &homeNode{fs: r.home, ino: 1},
			gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: inoHomeBase | 1}), false)
	case r.homePath != nil:
		r.AddChild("home", r.NewPersistentInode(ctx, r.homePath,
			gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: inoFixed | 1}), false)
	}
	admin := &staticDir{cache: r.cache}
	add("admin", inoAdmin, admin)
	for i, name := range adminFiles {
		// 0666: the handler answers EPERM to anyone but root, as the
		// contract says, where the kernel would say EACCES.
		f := &liveFile{mode: 0o666, cache: r.cache,
			render: func() (string, error) {
				if r.view.Admin()[name] {
					return "1\n", nil
				}
				return "0\n", nil
			},
			write: func(ctx context.Context, data []byte, uid uint32) error {
				if uid != 0 {
					return ErrPermission
				}
				v, err := parseBool(data)
				if err != nil {
					return err
				}
				return r.view.SetAdmin(ctx, name, v)
			},
			log: r.cfg.logf,
		}
		admin.AddChild(name, admin.NewPersistentInode(ctx, f,
			gofs.StableAttr{Mode: syscall.S_IFREG, Ino: inoAdmin + 1 + uint64(i)}), false)
	}
}

// procDir is /cluster/proc: one directory per cluster process, listed
// live from the view.
type procDir struct {
	gofs.Inode
	view  View
	cache cacheTimes
}

var _ = (gofs.NodeReaddirer)((*procDir)(nil))
var _ = (gofs.NodeGetattrer)((*procDir)(nil))

func (d *procDir) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return d.cache.dir(out)
}

var _ = (gofs.NodeLookuper)((*procDir)(nil))

func (d *procDir) Readdir(context.Context) (gofs.DirStream, syscall.Errno) {
	var out []fuse.DirEntry
	for _, p := range d.view.Procs() {
		out = append(out, fuse.DirEntry{Name: strconv.Itoa(p.CPID), Ino: procIno(p.CPID), Mode: syscall.S_IFDIR})
	}
	return gofs.NewListDirStream(out), 0
}

func (d *procDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	cpid, err := strconv.Atoi(name)
	if err != nil || cpid <= 0 {
		return nil, syscall.ENOENT
	}
	if _, ok := findProc(d.view, cpid); !ok {
		return nil, syscall.ENOENT
	}
	return reply(ctx, d.NewInode(ctx, &procEntry{view: d.view, cpid: cpid, cache: d.cache},
		gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: procIno(cpid)}), d.cache.entry, out)
}

func findProc(v View, cpid int) (ProcView, bool) {
	for _, p := range v.Procs() {
		if p.CPID == cpid {
			return p, true
		}
	}
	return ProcView{}, false
}

// procEntry is /cluster/proc/<cpid>.
type procEntry struct {
	gofs.Inode
	view  View
	cpid  int
	cache cacheTimes
}

var _ = (gofs.NodeReaddirer)((*procEntry)(nil))
var _ = (gofs.NodeGetattrer)((*procEntry)(nil))

func (d *procEntry) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return d.cache.dir(out)
}

var _ = (gofs.NodeLookuper)((*procEntry)(nil))

func (d *procEntry) Readdir(context.Context) (gofs.DirStream, syscall.Errno) {
	var out []fuse.DirEntry
	for i, f := range procFiles {
		out = append(out, fuse.DirEntry{Name: f, Ino: procIno(d.cpid) + 1 + uint64(i), Mode: syscall.S_IFREG})
	}
	return gofs.NewListDirStream(out), 0
}

func (d *procEntry) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	for i, f := range procFiles {
		if f != name {
			continue
		}
		lf := &liveFile{mode: 0o444, cache: d.cache, render: func() (string, error) {
			p, ok := findProc(d.view, d.cpid)
			if !ok {
				return "", ErrNoProcess
			}
			return renderProcFile(p, name), nil
		}}
		switch name {
		case "where":
			lf.mode = 0o666
			lf.write = func(ctx context.Context, data []byte, uid uint32) error {
				return d.view.Migrate(ctx, d.cpid, trimValue(data), uid)
			}
		case "lock":
			lf.mode = 0o666
			lf.write = func(ctx context.Context, data []byte, uid uint32) error {
				v, err := parseBool(data)
				if err != nil {
					return err
				}
				return d.view.SetLock(ctx, d.cpid, v, uid)
			}
		}
		return reply(ctx, d.NewInode(ctx, lf, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: procIno(d.cpid) + 1 + uint64(i)}), d.cache.entry, out)
	}
	return nil, syscall.ENOENT
}

// nodesDir is /cluster/nodes.
type nodesDir struct {
	gofs.Inode
	view  View
	cache cacheTimes
}

var _ = (gofs.NodeReaddirer)((*nodesDir)(nil))
var _ = (gofs.NodeGetattrer)((*nodesDir)(nil))

func (d *nodesDir) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return d.cache.dir(out)
}

var _ = (gofs.NodeLookuper)((*nodesDir)(nil))

func (d *nodesDir) Readdir(context.Context) (gofs.DirStream, syscall.Errno) {
	var out []fuse.DirEntry
	for _, n := range d.view.Nodes() {
		out = append(out, fuse.DirEntry{Name: n.Name, Ino: nodeIno(n.Name), Mode: syscall.S_IFDIR})
	}
	return gofs.NewListDirStream(out), 0
}

func (d *nodesDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if _, ok := findNode(d.view, name); !ok {
		return nil, syscall.ENOENT
	}
	return reply(ctx, d.NewInode(ctx, &nodeEntry{view: d.view, name: name, cache: d.cache},
		gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: nodeIno(name)}), d.cache.entry, out)
}

func findNode(v View, name string) (NodeView, bool) {
	for _, n := range v.Nodes() {
		if n.Name == name {
			return n, true
		}
	}
	return NodeView{}, false
}

// nodeEntry is /cluster/nodes/<name>.
type nodeEntry struct {
	gofs.Inode
	view  View
	name  string
	cache cacheTimes
}

var _ = (gofs.NodeReaddirer)((*nodeEntry)(nil))
var _ = (gofs.NodeGetattrer)((*nodeEntry)(nil))

func (d *nodeEntry) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return d.cache.dir(out)
}

var _ = (gofs.NodeLookuper)((*nodeEntry)(nil))

func (d *nodeEntry) Readdir(context.Context) (gofs.DirStream, syscall.Errno) {
	var out []fuse.DirEntry
	for i, f := range nodeFiles {
		out = append(out, fuse.DirEntry{Name: f, Ino: nodeIno(d.name) + 1 + uint64(i), Mode: syscall.S_IFREG})
	}
	return gofs.NewListDirStream(out), 0
}

func (d *nodeEntry) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	for i, f := range nodeFiles {
		if f == name {
			lf := &liveFile{mode: 0o444, cache: d.cache, render: func() (string, error) {
				n, ok := findNode(d.view, d.name)
				if !ok {
					return "", ErrNotFound
				}
				return renderNodeFile(n, name), nil
			}}
			return reply(ctx, d.NewInode(ctx, lf, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: nodeIno(d.name) + 1 + uint64(i)}), d.cache.entry, out)
		}
	}
	return nil, syscall.ENOENT
}

// liveFile is a file whose content is rendered from the view when it is
// opened (and when its size is asked), and whose writes become requests.
// Reads use direct I/O: the kernel caches nothing of a value that changes
// every second.
type liveFile struct {
	gofs.Inode
	mode   uint32
	cache  cacheTimes
	render func() (string, error)
	write  func(ctx context.Context, data []byte, uid uint32) error
	log    func(format string, args ...any)
}

// liveHandle holds what a reader sees: one rendering, so that a read in
// several pieces is consistent.
type liveHandle struct {
	mu      sync.Mutex // protects content
	content []byte
}

var _ = (gofs.NodeGetattrer)((*liveFile)(nil))
var _ = (gofs.NodeSetattrer)((*liveFile)(nil))
var _ = (gofs.NodeOpener)((*liveFile)(nil))
var _ = (gofs.NodeReader)((*liveFile)(nil))
var _ = (gofs.NodeWriter)((*liveFile)(nil))

func (f *liveFile) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	s, err := f.render()
	if err != nil {
		return errno(err)
	}
	out.Mode = f.mode
	out.Size = uint64(len(s))
	f.cache.attrOut(out)
	return 0
}

// Setattr accepts the truncation that `echo x > file` asks before it
// writes; the value itself arrives with the write.
func (f *liveFile) Setattr(ctx context.Context, fh gofs.FileHandle, _ *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.Getattr(ctx, fh, out)
}

func (f *liveFile) Open(_ context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 && f.write == nil {
		return nil, 0, syscall.EACCES
	}
	s, err := f.render()
	if err != nil {
		return nil, 0, errno(err)
	}
	return &liveHandle{content: []byte(s)}, fuse.FOPEN_DIRECT_IO, 0
}

func (f *liveFile) Read(_ context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := fh.(*liveHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if off >= int64(len(h.content)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(h.content)))
	return fuse.ReadResultData(h.content[off:end]), 0
}

// Write hands the value to the view; it returns when the request is done
// (a migration, for `where`), with the request's errno.
func (f *liveFile) Write(ctx context.Context, _ gofs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if f.write == nil {
		return 0, syscall.EACCES
	}
	if off != 0 || len(data) > 256 {
		return 0, syscall.EINVAL
	}
	if err := f.write(ctx, data, callerUID(ctx)); err != nil {
		e := errno(err)
		if e == syscall.EIO && f.log != nil {
			f.log("write: %v", err)
		}
		return 0, e
	}
	return uint32(len(data)), 0
}

func trimValue(data []byte) string {
	s := string(data)
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	return s
}
