package fs

import (
	"context"
	"hash/fnv"
	"strconv"
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
		f := adminFile(r.view, name, r.cache, r.cfg.logf)
		admin.AddChild(name, admin.NewPersistentInode(ctx, f,
			gofs.StableAttr{Mode: syscall.S_IFREG, Ino: inoAdmin + 1 + uint64(i)}), false)
	}
}

// procDir is /cluster/proc: one directory per cluster process, listed
// live from the view: those the caller may see (View.Procs).
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

func (d *procDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	var out []fuse.DirEntry
	for _, p := range d.view.Procs(callerUID(ctx)) {
		out = append(out, fuse.DirEntry{Name: strconv.Itoa(p.CPID), Ino: procIno(p.CPID), Mode: syscall.S_IFDIR})
	}
	return gofs.NewListDirStream(out), 0
}

func (d *procDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	cpid, err := strconv.Atoi(name)
	if err != nil || cpid <= 0 {
		return nil, syscall.ENOENT
	}
	entry := d.cache.entry
	if d.view.PerUser() {
		// The kernel keeps a name for everyone: kept, it would show a
		// process to the users it is hidden from.
		entry = 0
	}
	// The entry's Getattr answers ENOENT for a process that has ended
	// or that the caller may not see.
	return reply(ctx, d.NewInode(ctx, &procEntry{view: d.view, cpid: cpid, cache: d.cache},
		gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: procIno(cpid)}), entry, out)
}

// findProc is process cpid as uid sees it; false if it has ended or is
// hidden from uid.
func findProc(v View, cpid int, uid uint32) (ProcView, bool) {
	for _, p := range v.Procs(uid) {
		if p.CPID == cpid {
			return p, true
		}
	}
	return ProcView{}, false
}

// procEntry is /cluster/proc/<cpid>, owned by the process's owner as
// /proc/<pid> is.
type procEntry struct {
	gofs.Inode
	view  View
	cpid  int
	cache cacheTimes
}

var _ = (gofs.NodeReaddirer)((*procEntry)(nil))
var _ = (gofs.NodeGetattrer)((*procEntry)(nil))

func (d *procEntry) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	p, ok := findProc(d.view, d.cpid, callerUID(ctx))
	if !ok {
		return syscall.ENOENT
	}
	out.Owner = procOwner(p)
	return d.cache.dir(out)
}

// procOwner owns a process's directory and files.
func procOwner(p ProcView) fuse.Owner {
	return fuse.Owner{Uid: uint32(p.UID), Gid: uint32(p.GID)}
}

var _ = (gofs.NodeLookuper)((*procEntry)(nil))

func (d *procEntry) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	if _, ok := findProc(d.view, d.cpid, callerUID(ctx)); !ok {
		return nil, syscall.ENOENT
	}
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
		lf := procFile(d.view, d.cpid, name, d.cache)
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
			lf := &liveFile{mode: 0o444, cache: d.cache, render: rootOwned(func() (string, error) {
				n, ok := findNode(d.view, d.name)
				if !ok {
					return "", ErrNotFound
				}
				return renderNodeFile(n, name), nil
			})}
			return reply(ctx, d.NewInode(ctx, lf, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: nodeIno(d.name) + 1 + uint64(i)}), d.cache.entry, out)
		}
	}
	return nil, syscall.ENOENT
}

func trimValue(data []byte) string {
	s := string(data)
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	return s
}
