package fs

import (
	"context"
	"fmt"
	"strconv"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The path backend (home.backend: path) serves an existing directory,
// typically a shared mount that other nodes write too, as /cluster/home.
// The agent serving it is root, and another node's user can replace any
// name in it by a symlink at any moment, between the kernel's lookup and
// the request that follows (a create after a failed lookup, a setattr or
// an open after a successful one). go-fuse's loopback works with paths
// built from its node tree and follows symlinks in them, so such a race
// made root create, truncate or chmod whatever the symlink named
// (/etc/shadow). Here, instead:
//   - every name is resolved beneath the served directory's descriptor by
//     openat2 with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS: no component of a
//     path is ever followed, the last one included; a symlink met on the
//     way fails with ELOOP, and one that is the last component is acted
//     on as Linux acts on it for lstat, readlink, unlink, rename, lchown
//     (never followed);
//   - everything that creates, opens, changes or removes runs as the
//     caller (loopback_caller.go): the kernel itself checks what the user
//     could do there, ACLs and sticky bits included, and what is created
//     belongs to the user. Lookups, getattr, readlink and statfs read
//     metadata as the agent, without following anything: the kernel has
//     checked the walk (default_permissions) before asking.

// inoPathBase offsets the served directory's inode numbers into their own
// range, away from /cluster's own and the Raft home's (nodes.go).
const inoPathBase = 0xB << 60

// resolveBeneath is how every path is resolved: never through a symlink
// (nor /proc's magic links), never out of the served directory.
const resolveBeneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// statxMask is what a lookup or getattr asks of statx: the birth time
// gives a reused inode number a new generation (as go-fuse's loopback).
const statxMask = unix.STATX_BASIC_STATS | unix.STATX_BTIME

// pathHome is one served directory.
type pathHome struct {
	dir int    // O_PATH descriptor of the served directory, opened once
	dev uint64 // its device: inode numbers from other devices are mixed
	top *gofs.Inode
}

// pathNode is a file, directory, symlink or special file of the served
// directory, named by its path from the top in go-fuse's tree.
type pathNode struct {
	gofs.Inode
	home *pathHome
}

// newPathHome opens dir (following symlinks in dir itself: the
// administrator's choice) and returns its top node.
func newPathHome(dir string) (*pathNode, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var x unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, statxMask, &x); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Without openat2 (Linux < 5.6) there is no way to refuse symlinks in
	// every component: serve nothing rather than follow them as root.
	probe, err := openBeneath(fd, ".", unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("resolving beneath %s (openat2 needs Linux 5.6): %w", dir, err)
	}
	unix.Close(probe)
	h := &pathHome{dir: fd, dev: unix.Mkdev(x.Dev_major, x.Dev_minor)}
	n := &pathNode{home: h}
	h.top = &n.Inode
	return n, nil
}

// openFlags are the flags of an open or a create that reach the served
// directory: openat2, unlike open, refuses any other (the kernel's
// internal ones among them).
const openFlags = unix.O_ACCMODE | unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_NONBLOCK |
	unix.O_DSYNC | unix.O_SYNC | unix.O_DIRECT | unix.O_LARGEFILE | unix.O_NOATIME |
	unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_PATH

// openBeneath is openat2 of rel under dir, resolved as resolveBeneath
// says. openat2 asks to retry (EAGAIN) when a rename raced the walk.
func openBeneath(dir int, rel string, flags int, mode uint32) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags&openFlags | unix.O_CLOEXEC), Resolve: resolveBeneath}
	if flags&unix.O_CREAT != 0 {
		how.Mode = uint64(mode & 0o7777)
	}
	for tries := 0; ; tries++ {
		fd, err := unix.Openat2(dir, rel, &how)
		if err == unix.EINTR || (err == unix.EAGAIN && tries < 8) {
			continue
		}
		return fd, err
	}
}

// rel is n's path from the top ("." for the top). An orphaned node's path
// names nothing that exists.
func (n *pathNode) rel() string {
	if p := n.Path(n.home.top); p != "" {
		return p
	}
	return "."
}

// withFd opens rel beneath the top with flags and runs fn on it.
func (h *pathHome) withFd(rel string, flags int, fn func(fd int) error) error {
	fd, err := openBeneath(h.dir, rel, flags, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return fn(fd)
}

// self runs fn on an O_PATH descriptor of what rel names: of the
// symlink, if it is one now.
func (h *pathHome) self(rel string, fn func(fd int) error) error {
	return h.withFd(rel, unix.O_PATH|unix.O_NOFOLLOW, fn)
}

// inDir runs fn on an O_PATH descriptor of directory rel.
func (h *pathHome) inDir(rel string, fn func(dir int) error) error {
	return h.withFd(rel, unix.O_PATH|unix.O_DIRECTORY, fn)
}

// procPath names the object fd refers to, for the calls that take no
// descriptor (chmod, truncate, xattrs): /proc's magic link leads to that
// very object, whatever its name has become.
func procPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// stable is the node identity of what x describes.
func (h *pathHome) stable(x *unix.Statx_t) gofs.StableAttr {
	ino := x.Ino
	if dev := unix.Mkdev(x.Dev_major, x.Dev_minor); dev != h.dev {
		ino ^= dev<<32 | dev>>32
	}
	gen := uint64(1)
	if x.Mask&unix.STATX_BTIME != 0 && (x.Btime.Sec != 0 || x.Btime.Nsec != 0) {
		gen = uint64(x.Btime.Sec)*1e9 + uint64(x.Btime.Nsec)
	}
	return gofs.StableAttr{Mode: uint32(x.Mode) & syscall.S_IFMT, Ino: inoPathBase | ino&(1<<60-1), Gen: gen}
}

// attrFromStatx fills a from x; the inode number is the node's.
func (h *pathHome) attrFromStatx(x *unix.Statx_t, a *fuse.Attr) {
	a.Ino = h.stable(x).Ino
	a.Size, a.Blocks, a.Blksize = x.Size, x.Blocks, x.Blksize
	a.Atime, a.Atimensec = uint64(x.Atime.Sec), x.Atime.Nsec
	a.Mtime, a.Mtimensec = uint64(x.Mtime.Sec), x.Mtime.Nsec
	a.Ctime, a.Ctimensec = uint64(x.Ctime.Sec), x.Ctime.Nsec
	a.Mode, a.Nlink = uint32(x.Mode), x.Nlink
	a.Uid, a.Gid = x.Uid, x.Gid
	a.Rdev = uint32(unix.Mkdev(x.Rdev_major, x.Rdev_minor))
}

// child answers a lookup or a creation: the node for what x describes.
// Nothing is cached by the kernel (timeouts 0, cache.go): another node
// may change the name at any time.
func (n *pathNode) child(ctx context.Context, x *unix.Statx_t, out *fuse.EntryOut) *gofs.Inode {
	n.home.attrFromStatx(x, &out.Attr)
	return n.NewInode(ctx, &pathNode{home: n.home}, n.home.stable(x))
}

var _ = (gofs.NodeLookuper)((*pathNode)(nil))

func (n *pathNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	var x unix.Statx_t
	err := n.home.inDir(n.rel(), func(dir int) error {
		return unix.Statx(dir, name, unix.AT_SYMLINK_NOFOLLOW, statxMask, &x)
	})
	if err != nil {
		return nil, gofs.ToErrno(err)
	}
	return n.child(ctx, &x, out), 0
}

var _ = (gofs.NodeGetattrer)((*pathNode)(nil))

func (n *pathNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if fga, ok := f.(gofs.FileGetattrer); ok {
		return fga.Getattr(ctx, out)
	}
	var x unix.Statx_t
	err := n.home.self(n.rel(), func(fd int) error {
		return unix.Statx(fd, "", unix.AT_EMPTY_PATH, statxMask, &x)
	})
	if err != nil {
		return gofs.ToErrno(err)
	}
	n.home.attrFromStatx(&x, &out.Attr)
	return 0
}

var _ = (gofs.NodeReadlinker)((*pathNode)(nil))

func (n *pathNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	var target []byte
	err := n.home.self(n.rel(), func(fd int) error {
		for size := 256; ; size *= 2 {
			buf := make([]byte, size)
			k, err := unix.Readlinkat(fd, "", buf)
			if err != nil || k < size {
				target = buf[:max(k, 0)]
				return err
			}
		}
	})
	return target, gofs.ToErrno(err)
}

var _ = (gofs.NodeStatfser)((*pathNode)(nil))

func (n *pathNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return gofs.ToErrno(n.home.self(n.rel(), func(fd int) error {
		var s syscall.Statfs_t
		if err := syscall.Fstatfs(fd, &s); err != nil {
			return err
		}
		out.FromStatfsT(&s)
		return nil
	}))
}

var _ = (gofs.NodeOpener)((*pathNode)(nil))

// Open opens n as the caller, refusing a symlink (ELOOP) wherever it is.
// O_APPEND is dropped as go-fuse's loopback does: the kernel sends each
// write's offset.
func (n *pathNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	flags &^= syscall.O_APPEND | fuse.FMODE_EXEC | syscall.O_CREAT | syscall.O_EXCL | syscall.O_NOCTTY
	rel := n.rel()
	fd := -1
	err := asCaller(ctx, func() error {
		var err error
		fd, err = openBeneath(n.home.dir, rel, int(flags)|unix.O_NOFOLLOW, 0)
		return err
	})
	if err != nil {
		return nil, 0, gofs.ToErrno(err)
	}
	return gofs.NewLoopbackFile(fd), 0, 0
}

var _ = (gofs.NodeOpendirHandler)((*pathNode)(nil))

// OpendirHandle opens directory n for reading as the caller.
func (n *pathNode) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	rel := n.rel()
	fd := -1
	err := asCaller(ctx, func() error {
		var err error
		fd, err = openBeneath(n.home.dir, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		return err
	})
	if err != nil {
		return nil, 0, gofs.ToErrno(err)
	}
	ds, errno := gofs.NewLoopbackDirStreamFd(fd)
	if errno != 0 {
		unix.Close(fd)
		return nil, 0, errno
	}
	return ds, 0, 0
}
