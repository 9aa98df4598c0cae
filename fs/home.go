package fs

import (
	"context"
	"errors"
	"time"
)

// Home is the shared home directory's backend: a replica to read from and
// a cluster to write through. The agent implements it (on Raft by
// default); fs/ turns FUSE requests into its calls and decides nothing.
// Inode numbers are the backend's, the same on every node; the root is 1.
// Each call that takes a context must bound its own wait: a request's
// context does not end when the kernel interrupts the request, only when
// its caller is being killed (see uninterrupted).
type Home interface {
	Lookup(parent uint64, name string) (HomeAttr, error)
	Getattr(ino uint64) (HomeAttr, error)
	Readdir(ino uint64) ([]HomeEntry, error)
	// Read copies file data from off into dest and returns how many bytes
	// it copied: fewer than len(dest) at the end, none past it.
	Read(ino, off uint64, dest []byte) (int, error)
	Readlink(ino uint64) (string, error)
	Statfs() HomeUsage
	// Fresh is the read barrier: it returns once this replica reflects
	// every write that returned on any node before the call. Every
	// lookup (ENOENT included), getattr, readdir, readlink and open of
	// the home calls it before it reads the replica, so concurrent calls
	// should share a round trip. Without a quorum it returns nil after a
	// bounded wait, and the replica is served as it is; an error fails
	// the request that called it.
	Fresh(ctx context.Context) error

	Create(ctx context.Context, parent uint64, name string, kind HomeKind, mode, uid, gid uint32, target string) (HomeAttr, error)
	// Write stores extents; it returns once they are committed on a
	// quorum and applied to this replica (fs/ relies on that: once a
	// write returned, its bytes are read from the replica, no longer
	// from what this node buffers). It is called from background
	// goroutines, several at once for one inode when they do not overlap.
	Write(ctx context.Context, ino uint64, extents []Extent) error
	SetAttr(ctx context.Context, ino uint64, a HomeSetAttr) error
	Link(ctx context.Context, ino, parent uint64, name string) (HomeAttr, error)
	Unlink(ctx context.Context, parent uint64, name string) error
	Rmdir(ctx context.Context, parent uint64, name string) error
	Rename(ctx context.Context, oldParent uint64, oldName string, newParent uint64, newName string) error
	// Node names this node: it tags the files this node keeps for their
	// holders after an unlink (see homeFS), so that its next start can
	// remove what a crash left.
	Node() string
}

// HomeKind is a home inode's type.
type HomeKind int

// Home inode types.
const (
	HomeFile HomeKind = iota
	HomeDir
	HomeSymlink
)

// HomeAttr is one home inode.
type HomeAttr struct {
	Ino                 uint64
	Kind                HomeKind
	Mode                uint32 // permission bits
	UID, GID            uint32
	Size                uint64
	Nlink               uint32
	Atime, Mtime, Ctime time.Time
	// Version changes with every change of a file's data: the kernel
	// keeps its cached pages across an open only while it is the same.
	Version uint64
}

// HomeEntry is one directory entry.
type HomeEntry struct {
	Name string
	Ino  uint64
	Kind HomeKind
}

// HomeSetAttr changes the fields that are set.
type HomeSetAttr struct {
	Mode, UID, GID *uint32
	Size           *uint64
	Atime, Mtime   *time.Time
}

// Extent is data written at an offset.
type Extent struct {
	Off  uint64
	Data []byte
}

// HomeUsage is what statfs reports.
type HomeUsage struct {
	Used, Quota, Inodes uint64
}

// Home's domain errors (besides those of View).
var (
	ErrNotFound = errors.New("no such file or directory")
	ErrExists   = errors.New("file exists")
	ErrNotEmpty = errors.New("directory not empty")
	ErrIsDir    = errors.New("is a directory")
	ErrNotDir   = errors.New("not a directory")
	ErrTooBig   = errors.New("file too large")
	ErrNoSpace  = errors.New("no space left")
)
