package fs

import (
	"context"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// liveFile is a file whose content is rendered from the view when it is
// opened (and when its size is asked), and whose writes become requests.
// Reads use direct I/O: the kernel caches nothing of a value that changes
// every second.
//
// Who may write is decided when the file is opened, as for any file: a
// control file belongs to its process's owner (admin files to root), mode
// 0644, so the kernel refuses anyone else's open for writing
// (default_permissions) and Open refuses it again. The handle keeps the
// opener's uid, and every write through it is that uid's request,
// whoever makes the write: a root program handed a user's descriptor
// acts as the user, never as root.
type liveFile struct {
	gofs.Inode
	mode  uint32 // permission bits
	cache cacheTimes
	// render is the content and the owner of the file as uid sees them;
	// ErrNoProcess (ENOENT) when its process has ended or is hidden
	// from uid.
	render func(uid uint32) (string, fuse.Owner, error)
	// write is nil for a read-only file.
	write func(ctx context.Context, data []byte, uid uint32) error
	log   func(format string, args ...any)
}

// liveHandle is one open of a liveFile: what its reader sees (one
// rendering, so that a read in several pieces is consistent) and who
// opened it.
type liveHandle struct {
	uid     uint32     // the opener: the identity of every write through it
	mu      sync.Mutex // protects content
	content []byte
}

var _ = (gofs.NodeGetattrer)((*liveFile)(nil))
var _ = (gofs.NodeSetattrer)((*liveFile)(nil))
var _ = (gofs.NodeOpener)((*liveFile)(nil))
var _ = (gofs.NodeReader)((*liveFile)(nil))
var _ = (gofs.NodeWriter)((*liveFile)(nil))

// adminFile is /cluster/admin/<name>: root's, 0644, so only root opens
// it for writing.
func adminFile(v View, name string, cache cacheTimes, logf func(string, ...any)) *liveFile {
	return &liveFile{mode: 0o644, cache: cache, log: logf,
		render: rootOwned(func() (string, error) {
			if v.Admin()[name] {
				return "1\n", nil
			}
			return "0\n", nil
		}),
		write: func(ctx context.Context, data []byte, uid uint32) error {
			if uid != 0 { // opened by root, so never: a second lock
				return ErrPermission
			}
			on, err := parseBool(data)
			if err != nil {
				return err
			}
			return v.SetAdmin(ctx, name, on)
		},
	}
}

// procFile is /cluster/proc/<cpid>/<name>: the process owner's, like
// /proc/<pid>'s files; where and lock (0644) are the owner's to write.
func procFile(v View, cpid int, name string, cache cacheTimes) *liveFile {
	lf := &liveFile{mode: 0o444, cache: cache, render: func(uid uint32) (string, fuse.Owner, error) {
		p, ok := findProc(v, cpid, uid)
		if !ok {
			return "", fuse.Owner{}, ErrNoProcess
		}
		return renderProcFile(p, name), procOwner(p), nil
	}}
	switch name {
	case "where":
		lf.mode = 0o644
		lf.write = func(ctx context.Context, data []byte, uid uint32) error {
			return v.Migrate(ctx, cpid, trimValue(data), uid)
		}
	case "lock":
		lf.mode = 0o644
		lf.write = func(ctx context.Context, data []byte, uid uint32) error {
			on, err := parseBool(data)
			if err != nil {
				return err
			}
			return v.SetLock(ctx, cpid, on, uid)
		}
	}
	return lf
}

// rootOwned renders files that belong to root (nodes, admin).
func rootOwned(render func() (string, error)) func(uint32) (string, fuse.Owner, error) {
	return func(uint32) (string, fuse.Owner, error) {
		s, err := render()
		return s, fuse.Owner{}, err
	}
}

func (f *liveFile) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	s, owner, err := f.render(callerUID(ctx))
	if err != nil {
		return errno(err)
	}
	out.Mode = f.mode
	out.Owner = owner
	out.Size = uint64(len(s))
	f.cache.attrOut(out)
	return 0
}

// Setattr accepts the truncation that `echo x > file` asks before it
// writes; the value itself arrives with the write. A chmod or chown by
// the owner changes nothing: the answer is the file's own attributes.
func (f *liveFile) Setattr(ctx context.Context, fh gofs.FileHandle, _ *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.Getattr(ctx, fh, out)
}

// Open renders the content and, for writing, checks the caller as the
// kernel does for a file of mode 0644: its owner or root. EACCES, as
// open(2) answers for any file one may not write.
func (f *liveFile) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	uid := callerUID(ctx)
	s, owner, err := f.render(uid)
	if err != nil {
		return nil, 0, errno(err)
	}
	if flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 && (f.write == nil || (uid != 0 && uid != owner.Uid)) {
		return nil, 0, syscall.EACCES
	}
	return &liveHandle{uid: uid, content: []byte(s)}, fuse.FOPEN_DIRECT_IO, 0
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

// Write hands the value to the view as the request of the handle's
// opener; it returns when the request is done (a migration, for
// `where`), with the request's errno.
func (f *liveFile) Write(ctx context.Context, fh gofs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	h, ok := fh.(*liveHandle)
	if !ok {
		return 0, syscall.EBADF
	}
	if f.write == nil {
		return 0, syscall.EACCES
	}
	if off != 0 || len(data) > 256 {
		return 0, syscall.EINVAL
	}
	if err := f.write(ctx, data, h.uid); err != nil {
		e := errno(err)
		if e == syscall.EIO && f.log != nil {
			f.log("write: %v", err)
		}
		return 0, e
	}
	return uint32(len(data)), 0
}
