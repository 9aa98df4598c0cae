package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// Extended attributes of the path backend, read and written as the
// caller (loopback_caller.go): without capabilities, trusted.* is out of
// sight and security.capability out of reach, as for the user on a
// local file system. A symlink has none here (Linux allows no user.*
// attribute on one).

// xattr runs fn as the caller on a path to rel's object itself (through
// /proc's magic link to its descriptor), or returns onLink if it is a
// symlink.
func (h *pathHome) xattr(ctx context.Context, rel string, onLink error, fn func(p string) error) error {
	return asCaller(ctx, func() error {
		return h.self(rel, func(fd int) error {
			var x unix.Statx_t
			if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_TYPE, &x); err != nil {
				return err
			}
			if x.Mode&unix.S_IFMT == unix.S_IFLNK {
				return onLink
			}
			return fn(procPath(fd))
		})
	})
}

var _ = (gofs.NodeGetxattrer)((*pathNode)(nil))

func (n *pathNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	size := 0
	err := n.home.xattr(ctx, n.rel(), unix.ENODATA, func(p string) error {
		var err error
		size, err = unix.Getxattr(p, attr, dest)
		return err
	})
	return uint32(max(size, 0)), gofs.ToErrno(err)
}

var _ = (gofs.NodeListxattrer)((*pathNode)(nil))

func (n *pathNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	size := 0
	err := n.home.xattr(ctx, n.rel(), nil, func(p string) error {
		var err error
		size, err = unix.Listxattr(p, dest)
		return err
	})
	return uint32(max(size, 0)), gofs.ToErrno(err)
}

var _ = (gofs.NodeSetxattrer)((*pathNode)(nil))

func (n *pathNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return gofs.ToErrno(n.home.xattr(ctx, n.rel(), unix.EPERM, func(p string) error {
		return unix.Setxattr(p, attr, data, int(flags))
	}))
}

var _ = (gofs.NodeRemovexattrer)((*pathNode)(nil))

func (n *pathNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return gofs.ToErrno(n.home.xattr(ctx, n.rel(), unix.EPERM, func(p string) error {
		return unix.Removexattr(p, attr)
	}))
}
