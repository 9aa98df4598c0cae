package raftstore

import (
	"maps"
	"slices"
	"time"
)

// The replicated /cluster/home: a small POSIX-like tree of inodes,
// directory entries and file data that every node holds in full, so reads
// are local. The FUSE layer turns its requests into Home* commands and
// serves reads from HomeLookup, HomeRead and friends.
//
// Data lives in the FSM's memory, in blocks of HomeBlockSize bytes per
// inode, and travels in snapshots. A block slice is never changed once
// stored: a write builds a new slice for each block it touches. So
// cloning the state for a snapshot copies block headers, not data.
//
// Links: a file or symlink is deleted, with its data, when its last
// directory entry goes (nlink reaches 0). Keeping an unlinked file open
// is the FUSE layer's business: it keeps the open file's content on the
// node that holds it open. The agreed state has no orphan list, so a
// crashed node cannot leak space cluster-wide.
//
// Limits: HomeConfig sets a maximum file size and a quota, both agreed
// through the log so every node refuses the same writes. Usage counts the
// apparent size of regular files (holes included), which is what a write
// or truncate can change and check exactly.

// HomeBlockSize is the size of a file data block.
const HomeBlockSize = 64 << 10

// HomeRootIno is the inode number of /cluster/home itself.
const HomeRootIno uint64 = 1

// HomeMaxName bounds a directory entry's name, in bytes.
const HomeMaxName = 255

// HomeFileType is the kind of an inode.
type HomeFileType string

// Inode types.
const (
	HomeFile    HomeFileType = "file"
	HomeDir     HomeFileType = "dir"
	HomeSymlink HomeFileType = "symlink"
)

func (t HomeFileType) valid() bool { return t == HomeFile || t == HomeDir || t == HomeSymlink }

// HomeInode is one file, directory or symlink of the home tree.
type HomeInode struct {
	Ino  uint64       `json:"ino"`
	Type HomeFileType `json:"type"`
	Mode uint32       `json:"mode"` // permission bits only (07777)
	UID  uint32       `json:"uid"`
	GID  uint32       `json:"gid"`
	// Size is the file's length, or the target's length for a symlink;
	// zero for directories.
	Size  uint64    `json:"size"`
	Nlink uint32    `json:"nlink"` // directories: 2 + subdirectories
	Atime time.Time `json:"atime"`
	Mtime time.Time `json:"mtime"`
	Ctime time.Time `json:"ctime"`
	// Target is a symlink's target.
	Target string `json:"target,omitempty"`
	// Version counts changes to a file's data (writes, truncates), for
	// the FUSE layer's caches.
	Version uint64 `json:"version,omitempty"`
	// Parent is a directory's parent (the root is its own parent); a
	// directory has exactly one. Zero for files and symlinks, which may
	// have many links.
	Parent uint64 `json:"parent,omitempty"`
}

// HomeDirent is one directory entry.
type HomeDirent struct {
	Name string       `json:"name"`
	Ino  uint64       `json:"ino"`
	Type HomeFileType `json:"type"`
}

// HomeStats is the home tree's usage, for statfs.
type HomeStats struct {
	Used        uint64 `json:"used"`   // bytes: sum of regular files' sizes
	Inodes      uint64 `json:"inodes"` // inodes in use, root included
	Quota       uint64 `json:"quota"`  // 0: unlimited
	MaxFileSize uint64 `json:"max_file_size"`
}

// homeState is the home tree inside the FSM state.
type homeState struct {
	inodes map[uint64]*HomeInode
	// dirents has an entry for every directory (empty map when empty)
	// and none for other inodes.
	dirents map[uint64]map[string]uint64
	// blocks holds file data by inode and block index; only files with
	// at least one block have an entry. Slices are immutable once stored.
	// Block i holds bytes [i*HomeBlockSize, i*HomeBlockSize+len) and never
	// reaches past the file's size; missing bytes read as zeros.
	blocks      map[uint64]map[uint64][]byte
	nextIno     uint64
	used        uint64
	maxFileSize uint64 // 0: unlimited
	quota       uint64 // 0: unlimited
}

// newHomeState returns a home tree with only its root directory.
func newHomeState() *homeState {
	h := &homeState{
		inodes:  map[uint64]*HomeInode{},
		dirents: map[uint64]map[string]uint64{},
		blocks:  map[uint64]map[uint64][]byte{},
		nextIno: HomeRootIno + 1,
	}
	h.ensureRoot()
	return h
}

// ensureRoot adds the root directory if missing (a snapshot written
// before the home tree existed). Its times are zero: deterministic.
func (h *homeState) ensureRoot() {
	if _, ok := h.inodes[HomeRootIno]; ok {
		return
	}
	h.inodes[HomeRootIno] = &HomeInode{Ino: HomeRootIno, Type: HomeDir, Mode: 0o755, Nlink: 2, Parent: HomeRootIno}
	h.dirents[HomeRootIno] = map[string]uint64{}
	if h.nextIno <= HomeRootIno {
		h.nextIno = HomeRootIno + 1
	}
}

func (h *homeState) clone() *homeState {
	c := &homeState{
		inodes:      make(map[uint64]*HomeInode, len(h.inodes)),
		dirents:     make(map[uint64]map[string]uint64, len(h.dirents)),
		blocks:      make(map[uint64]map[uint64][]byte, len(h.blocks)),
		nextIno:     h.nextIno,
		used:        h.used,
		maxFileSize: h.maxFileSize,
		quota:       h.quota,
	}
	for k, in := range h.inodes {
		in2 := *in
		c.inodes[k] = &in2
	}
	for k, d := range h.dirents {
		c.dirents[k] = maps.Clone(d)
	}
	for k, b := range h.blocks {
		c.blocks[k] = maps.Clone(b) // slices are immutable: shared
	}
	return c
}

func (h *homeState) stats() HomeStats {
	return HomeStats{Used: h.used, Inodes: uint64(len(h.inodes)), Quota: h.quota, MaxFileSize: h.maxFileSize}
}

// dir returns the directory ino, or ErrNotFound / ErrNotDir.
func (h *homeState) dir(ino uint64) (map[string]uint64, error) {
	in, ok := h.inodes[ino]
	if !ok {
		return nil, ErrNotFound
	}
	if in.Type != HomeDir {
		return nil, ErrNotDir
	}
	return h.dirents[ino], nil
}

// lookup returns the inode called name in directory parent.
func (h *homeState) lookup(parent uint64, name string) (*HomeInode, error) {
	d, err := h.dir(parent)
	if err != nil {
		return nil, err
	}
	ino, ok := d[name]
	if !ok {
		return nil, ErrNotFound
	}
	return h.inodes[ino], nil
}

func (h *homeState) readdir(ino uint64) ([]HomeDirent, error) {
	d, err := h.dir(ino)
	if err != nil {
		return nil, err
	}
	out := make([]HomeDirent, 0, len(d))
	for _, name := range slices.Sorted(maps.Keys(d)) {
		out = append(out, HomeDirent{Name: name, Ino: d[name], Type: h.inodes[d[name]].Type})
	}
	return out, nil
}

// read returns up to n bytes of file ino from off; short at end of file.
func (h *homeState) read(ino, off uint64, n int) ([]byte, error) {
	if n < 0 {
		return nil, ErrInvalid
	}
	in, err := h.readable(ino)
	if err != nil {
		return nil, err
	}
	if off >= in.Size {
		return []byte{}, nil
	}
	out := make([]byte, min(uint64(n), in.Size-off))
	_, err = h.readAt(ino, off, out)
	return out, err
}

// readable returns the regular file ino for reading.
func (h *homeState) readable(ino uint64) (*HomeInode, error) {
	in, ok := h.inodes[ino]
	switch {
	case !ok:
		return nil, ErrNotFound
	case in.Type == HomeDir:
		return nil, ErrIsDir
	case in.Type != HomeFile:
		return nil, ErrInvalid
	}
	return in, nil
}

// readAt copies file ino's bytes from off into dest; short at end of file.
func (h *homeState) readAt(ino, off uint64, dest []byte) (int, error) {
	in, err := h.readable(ino)
	if err != nil {
		return 0, err
	}
	if off >= in.Size {
		return 0, nil
	}
	m := min(uint64(len(dest)), in.Size-off)
	blocks := h.blocks[ino]
	for done := uint64(0); done < m; {
		pos := off + done
		idx, within := pos/HomeBlockSize, pos%HomeBlockSize
		chunk := min(HomeBlockSize-within, m-done)
		out := dest[done : done+chunk]
		n := 0
		if b := blocks[idx]; uint64(len(b)) > within {
			n = copy(out, b[within:])
		}
		clear(out[n:]) // a hole, or past the block's data: zeros
		done += chunk
	}
	return int(m), nil
}
