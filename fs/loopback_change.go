package fs

import (
	"context"
	"path"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// What changes the served directory, all as the caller (loopback.go).

// errnoAsError is e as an error: nil for 0.
func errnoAsError(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// makeEntry runs mk as the caller in directory n, then returns the node for
// name, which mk made there.
func (n *pathNode) makeEntry(ctx context.Context, name string, out *fuse.EntryOut, mk func(dir int) error) (*gofs.Inode, syscall.Errno) {
	rel := n.rel()
	var x unix.Statx_t
	err := asCaller(ctx, func() error {
		return n.home.inDir(rel, func(dir int) error {
			if err := mk(dir); err != nil {
				return err
			}
			return unix.Statx(dir, name, unix.AT_SYMLINK_NOFOLLOW, statxMask, &x)
		})
	})
	if err != nil {
		return nil, gofs.ToErrno(err)
	}
	return n.child(ctx, &x, out), 0
}

var _ = (gofs.NodeCreater)((*pathNode)(nil))

// Create opens or creates name as the caller; a symlink there fails with
// ELOOP, whoever made it and whenever.
func (n *pathNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	flags &^= syscall.O_APPEND | fuse.FMODE_EXEC | syscall.O_NOCTTY
	rel := n.rel()
	fd := -1
	var x unix.Statx_t
	err := asCaller(ctx, func() error {
		return n.home.inDir(rel, func(dir int) error {
			var err error
			fd, err = openBeneath(dir, name, int(flags)|unix.O_CREAT|unix.O_NOFOLLOW, mode)
			if err != nil {
				return err
			}
			return unix.Statx(fd, "", unix.AT_EMPTY_PATH, statxMask, &x)
		})
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, nil, 0, gofs.ToErrno(err)
	}
	return n.child(ctx, &x, out), gofs.NewLoopbackFile(fd), 0, 0
}

var _ = (gofs.NodeMkdirer)((*pathNode)(nil))

func (n *pathNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.makeEntry(ctx, name, out, func(dir int) error { return unix.Mkdirat(dir, name, mode) })
}

var _ = (gofs.NodeMknoder)((*pathNode)(nil))

// Mknod makes what the caller may: a device needs CAP_MKNOD, which the
// caller's identity lacks unless the caller is root.
func (n *pathNode) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.makeEntry(ctx, name, out, func(dir int) error { return unix.Mknodat(dir, name, mode, int(rdev)) })
}

var _ = (gofs.NodeSymlinker)((*pathNode)(nil))

// Symlink stores target as it is: the agent never follows it, a reader's
// kernel does, with the reader's rights.
func (n *pathNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.makeEntry(ctx, name, out, func(dir int) error { return unix.Symlinkat(target, dir, name) })
}

var _ = (gofs.NodeLinker)((*pathNode)(nil))

// Link links what target's path names now, from its directory (linkat
// without AT_SYMLINK_FOLLOW: a symlink there is linked, not followed).
func (n *pathNode) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	from, ok := target.(*pathNode)
	if !ok || from.home != n.home {
		return nil, syscall.EXDEV
	}
	src := from.rel()
	if src == "." {
		return nil, syscall.EPERM // the top is a directory
	}
	return n.makeEntry(ctx, name, out, func(dir int) error {
		return n.home.inDir(path.Dir(src), func(srcDir int) error {
			return unix.Linkat(srcDir, path.Base(src), dir, name, 0)
		})
	})
}

var _ = (gofs.NodeUnlinker)((*pathNode)(nil))

func (n *pathNode) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(ctx, name, 0)
}

var _ = (gofs.NodeRmdirer)((*pathNode)(nil))

func (n *pathNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(ctx, name, unix.AT_REMOVEDIR)
}

func (n *pathNode) remove(ctx context.Context, name string, flags int) syscall.Errno {
	rel := n.rel()
	return gofs.ToErrno(asCaller(ctx, func() error {
		return n.home.inDir(rel, func(dir int) error { return unix.Unlinkat(dir, name, flags) })
	}))
}

var _ = (gofs.NodeRenamer)((*pathNode)(nil))

func (n *pathNode) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	to, ok := newParent.(*pathNode)
	if !ok || to.home != n.home {
		return syscall.EXDEV
	}
	from, dest := n.rel(), to.rel()
	return gofs.ToErrno(asCaller(ctx, func() error {
		return n.home.inDir(from, func(fromDir int) error {
			return n.home.inDir(dest, func(toDir int) error {
				return unix.Renameat2(fromDir, name, toDir, newName, uint(flags))
			})
		})
	}))
}

var _ = (gofs.NodeSetattrer)((*pathNode)(nil))

// Setattr changes n as the caller, in go-fuse's loopback's order: mode,
// owner, size, times. n is whatever its name is now: a symlink is
// changed as lchown and lutimes change one, and refuses a mode (as
// lchmod) or a size.
func (n *pathNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	rel := n.rel()
	mode, chmod := in.GetMode()
	if chmod && n.home.dropPrivilege(rel, mode) {
		chmod = false
	}
	err := asCaller(ctx, func() error {
		return n.home.self(rel, func(fd int) error {
			var x unix.Statx_t
			if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_TYPE|unix.STATX_MODE, &x); err != nil {
				return err
			}
			if chmod {
				if x.Mode&unix.S_IFMT == unix.S_IFLNK {
					return unix.EOPNOTSUPP
				}
				if err := unix.Chmod(procPath(fd), mode&07777); err != nil {
					return err
				}
			}
			return setOwnerSizeTimes(ctx, fd, uint32(x.Mode), f, in)
		})
	})
	if err != nil {
		return gofs.ToErrno(err)
	}
	return n.Getattr(ctx, f, out)
}

// setOwnerSizeTimes sets the owner, size and times that in asks for on fd, an
// O_PATH descriptor of an object of the given mode, as the caller.
func setOwnerSizeTimes(ctx context.Context, fd int, mode uint32, f gofs.FileHandle, in *fuse.SetAttrIn) error {
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		u, g := -1, -1
		if uok {
			u = int(uid)
		}
		if gok {
			g = int(gid)
		}
		if err := unix.Fchownat(fd, "", u, g, unix.AT_EMPTY_PATH); err != nil {
			return err
		}
	}
	if size, ok := in.GetSize(); ok {
		if err := truncateAs(ctx, fd, mode, f, size); err != nil {
			return err
		}
	}
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) == 0 {
		return nil
	}
	ts := []unix.Timespec{
		utimeArg(in.Valid, fuse.FATTR_ATIME, fuse.FATTR_ATIME_NOW, in.Atime, in.Atimensec),
		utimeArg(in.Valid, fuse.FATTR_MTIME, fuse.FATTR_MTIME_NOW, in.Mtime, in.Mtimensec),
	}
	return unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH)
}

// truncateAs sets the size of the file fd refers to: through the caller's
// open file if the kernel names one (ftruncate: the file was opened for
// writing), else as truncate(2) would, with the caller's rights.
func truncateAs(ctx context.Context, fd int, mode uint32, f gofs.FileHandle, size uint64) error {
	if fs, ok := f.(gofs.FileSetattrer); ok {
		in := fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_SIZE, Size: size}}
		return errnoAsError(fs.Setattr(ctx, &in, &fuse.AttrOut{}))
	}
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return unix.Truncate(procPath(fd), int64(size))
	case unix.S_IFDIR:
		return unix.EISDIR
	default:
		return unix.EINVAL
	}
}

// utimeArg is one of utimensat's times: left alone, now (which needs only
// write access) or the time the caller gave (which needs ownership).
func utimeArg(valid, set, now uint32, sec uint64, nsec uint32) unix.Timespec {
	switch {
	case valid&set == 0:
		return unix.Timespec{Nsec: unix.UTIME_OMIT}
	case valid&now != 0:
		return unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	return unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}
}

// dropPrivilege clears n's set-user-ID and set-group-ID bits as the agent
// when that is all a mode change does, and reports whether it did. The
// kernel asks for it on the behalf of whoever writes to, truncates or
// chowns such a file (file_remove_privs), who may not chmod it; clearing
// those bits gives nobody a right.
func (h *pathHome) dropPrivilege(rel string, mode uint32) bool {
	done := false
	_ = h.self(rel, func(fd int) error {
		var x unix.Statx_t
		if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_TYPE|unix.STATX_MODE, &x); err != nil {
			return err
		}
		cur, want := uint32(x.Mode)&07777, mode&07777
		if x.Mode&unix.S_IFMT == unix.S_IFLNK || want == cur || want&^cur != 0 || (cur^want)&^(unix.S_ISUID|unix.S_ISGID) != 0 {
			return nil
		}
		done = unix.Chmod(procPath(fd), want) == nil
		return nil
	})
	return done
}
