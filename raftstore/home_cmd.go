package raftstore

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// HomeConfig sets the home tree's limits; zero means unlimited. Lowering
// a limit below what is in use is allowed: only later growth is refused.
type HomeConfig struct {
	MaxFileSize uint64 `json:"max_file_size"`
	Quota       uint64 `json:"quota"`
}

// HomeCreate makes a file, directory or symlink called Name in directory
// Parent. Result.Ino carries the new inode's number. Target is required
// for a symlink and refused otherwise.
type HomeCreate struct {
	Parent uint64       `json:"parent"`
	Name   string       `json:"name"`
	Kind   HomeFileType `json:"kind"`
	Mode   uint32       `json:"mode"`
	UID    uint32       `json:"uid"`
	GID    uint32       `json:"gid"`
	Target string       `json:"target,omitempty"`
	Time   time.Time    `json:"time"`
}

// HomeExtent is one write: Data at offset Off.
type HomeExtent struct {
	Off  uint64 `json:"off"`
	Data []byte `json:"data"`
}

// HomeWrite writes extents to file Ino, in order, growing it as needed.
// One command may batch many writes; keep a batch around 1 MiB of data so
// a raft entry stays small. Either every extent is written or, when one
// would pass the maximum file size or the quota, none is.
type HomeWrite struct {
	Ino     uint64       `json:"ino"`
	Extents []HomeExtent `json:"extents"`
	Time    time.Time    `json:"time"`
}

// HomeTruncate sets file Ino's size; growing adds a hole (zeros).
type HomeTruncate struct {
	Ino  uint64    `json:"ino"`
	Size uint64    `json:"size"`
	Time time.Time `json:"time"`
}

// HomeSetAttr changes some attributes of Ino; nil fields are left alone.
// Mode takes permission bits only (07777). Ctime is set to Time.
type HomeSetAttr struct {
	Ino   uint64     `json:"ino"`
	Mode  *uint32    `json:"mode,omitempty"`
	UID   *uint32    `json:"uid,omitempty"`
	GID   *uint32    `json:"gid,omitempty"`
	Atime *time.Time `json:"atime,omitempty"`
	Mtime *time.Time `json:"mtime,omitempty"`
	Time  time.Time  `json:"time"`
}

// HomeLink adds a hard link Name in directory Parent to Ino, which must
// not be a directory.
type HomeLink struct {
	Ino    uint64    `json:"ino"`
	Parent uint64    `json:"parent"`
	Name   string    `json:"name"`
	Time   time.Time `json:"time"`
}

// HomeUnlink removes a non-directory entry; the inode and its data go
// with its last link.
type HomeUnlink struct {
	Parent uint64    `json:"parent"`
	Name   string    `json:"name"`
	Time   time.Time `json:"time"`
}

// HomeRmdir removes an empty directory.
type HomeRmdir struct {
	Parent uint64    `json:"parent"`
	Name   string    `json:"name"`
	Time   time.Time `json:"time"`
}

// HomeRename moves an entry, replacing an existing target atomically
// (rename(2)): a file may replace a file or symlink, a directory an
// empty directory; a directory cannot move into its own subtree.
type HomeRename struct {
	OldParent uint64    `json:"old_parent"`
	OldName   string    `json:"old_name"`
	NewParent uint64    `json:"new_parent"`
	NewName   string    `json:"new_name"`
	Time      time.Time `json:"time"`
}

// Type implements Command.
func (HomeConfig) Type() CommandType { return CmdHomeConfig }

// Type implements Command.
func (HomeCreate) Type() CommandType { return CmdHomeCreate }

// Type implements Command.
func (HomeWrite) Type() CommandType { return CmdHomeWrite }

// Type implements Command.
func (HomeTruncate) Type() CommandType { return CmdHomeTruncate }

// Type implements Command.
func (HomeSetAttr) Type() CommandType { return CmdHomeSetAttr }

// Type implements Command.
func (HomeLink) Type() CommandType { return CmdHomeLink }

// Type implements Command.
func (HomeUnlink) Type() CommandType { return CmdHomeUnlink }

// Type implements Command.
func (HomeRmdir) Type() CommandType { return CmdHomeRmdir }

// Type implements Command.
func (HomeRename) Type() CommandType { return CmdHomeRename }

func (HomeConfig) isCommand()   {}
func (HomeCreate) isCommand()   {}
func (HomeWrite) isCommand()    {}
func (HomeTruncate) isCommand() {}
func (HomeSetAttr) isCommand()  {}
func (HomeLink) isCommand()     {}
func (HomeUnlink) isCommand()   {}
func (HomeRmdir) isCommand()    {}
func (HomeRename) isCommand()   {}

func validName(name string) bool {
	return name != "" && name != "." && name != ".." && len(name) <= HomeMaxName &&
		!strings.ContainsAny(name, "/\x00")
}

func applyHomeConfig(s *state, c HomeConfig) error {
	s.home.maxFileSize, s.home.quota = c.MaxFileSize, c.Quota
	return nil
}

func applyHomeCreate(s *state, c HomeCreate) (uint64, error) {
	h := s.home
	d, err := h.dir(c.Parent)
	switch {
	case err != nil:
		return 0, fmt.Errorf("home create %q in %d: %w", c.Name, c.Parent, err)
	case !validName(c.Name):
		return 0, fmt.Errorf("home create: name %q: %w", c.Name, ErrInvalid)
	case !c.Kind.valid():
		return 0, fmt.Errorf("home create %q: type %q: %w", c.Name, c.Kind, ErrInvalid)
	case c.Mode&^0o7777 != 0:
		return 0, fmt.Errorf("home create %q: mode %o: %w", c.Name, c.Mode, ErrInvalid)
	case (c.Kind == HomeSymlink) != (c.Target != ""):
		return 0, fmt.Errorf("home create %q: a symlink and only a symlink has a target: %w", c.Name, ErrInvalid)
	case h.nextIno == math.MaxUint64:
		return 0, fmt.Errorf("home create %q: inode numbers exhausted: %w", c.Name, ErrNoSpace)
	}
	if _, ok := d[c.Name]; ok {
		return 0, fmt.Errorf("home create %q in %d: %w", c.Name, c.Parent, ErrExists)
	}
	in := &HomeInode{
		Ino: h.nextIno, Type: c.Kind, Mode: c.Mode, UID: c.UID, GID: c.GID, Nlink: 1,
		Atime: c.Time, Mtime: c.Time, Ctime: c.Time, Target: c.Target, Size: uint64(len(c.Target)),
	}
	h.nextIno++
	parent := h.inodes[c.Parent]
	if c.Kind == HomeDir {
		in.Nlink, in.Parent = 2, c.Parent
		h.dirents[in.Ino] = map[string]uint64{}
		parent.Nlink++
	}
	h.inodes[in.Ino] = in
	d[c.Name] = in.Ino
	parent.Mtime, parent.Ctime = c.Time, c.Time
	return in.Ino, nil
}

// file returns the regular file ino for a data change.
func (h *homeState) file(what string, ino uint64) (*HomeInode, error) {
	in, ok := h.inodes[ino]
	switch {
	case !ok:
		return nil, fmt.Errorf("%s %d: %w", what, ino, ErrNotFound)
	case in.Type == HomeDir:
		return nil, fmt.Errorf("%s %d: %w", what, ino, ErrIsDir)
	case in.Type != HomeFile:
		return nil, fmt.Errorf("%s %d: not a regular file: %w", what, ino, ErrInvalid)
	}
	return in, nil
}

// checkSize refuses to take file in from its size to size when that
// passes the maximum file size or the quota.
func (h *homeState) checkSize(what string, in *HomeInode, size uint64) error {
	if size > in.Size && h.maxFileSize > 0 && size > h.maxFileSize {
		return fmt.Errorf("%s %d: size %d over the limit of %d: %w", what, in.Ino, size, h.maxFileSize, ErrFileTooBig)
	}
	if size > in.Size && h.quota > 0 && size-in.Size > h.quota-min(h.used, h.quota) {
		return fmt.Errorf("%s %d: %d more bytes, %d of %d in use: %w", what, in.Ino, size-in.Size, h.used, h.quota, ErrNoSpace)
	}
	return nil
}

// setSize records a new size in the usage count.
func (h *homeState) setSize(in *HomeInode, size uint64) {
	h.used = h.used - in.Size + size
	in.Size = size
}

func applyHomeWrite(s *state, c HomeWrite) error {
	h := s.home
	in, err := h.file("home write", c.Ino)
	if err != nil {
		return err
	}
	size := in.Size
	for _, e := range c.Extents {
		end := e.Off + uint64(len(e.Data))
		if end < e.Off {
			return fmt.Errorf("home write %d: offset %d overflows: %w", c.Ino, e.Off, ErrFileTooBig)
		}
		if len(e.Data) > 0 {
			size = max(size, end)
		}
	}
	if err := h.checkSize("home write", in, size); err != nil {
		return err
	}
	for _, e := range c.Extents {
		h.writeExtent(c.Ino, e.Off, e.Data)
	}
	h.setSize(in, size)
	in.Mtime, in.Ctime = c.Time, c.Time
	in.Version++
	return nil
}

// writeExtent stores data at off, building a new slice for every block it
// changes in part (stored slices are shared with snapshots). It keeps
// slices of data itself for the blocks it replaces whole: data belongs to
// the state from then on (a decoded command's extents are its own copy).
func (h *homeState) writeExtent(ino, off uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	blocks := h.blocks[ino]
	if blocks == nil {
		blocks = map[uint64][]byte{}
		h.blocks[ino] = blocks
	}
	for len(data) > 0 {
		idx, within := off/HomeBlockSize, int(off%HomeBlockSize)
		n := min(HomeBlockSize-within, len(data))
		old := blocks[idx]
		if within == 0 && n >= len(old) {
			// The new data replaces the whole block: keep it as it is,
			// capped so that nothing can append into the next block.
			blocks[idx] = data[:n:n]
		} else {
			nb := make([]byte, max(len(old), within+n))
			copy(nb, old)
			copy(nb[within:], data[:n])
			blocks[idx] = nb
		}
		data, off = data[n:], off+uint64(n)
	}
}

func applyHomeTruncate(s *state, c HomeTruncate) error {
	h := s.home
	in, err := h.file("home truncate", c.Ino)
	if err != nil {
		return err
	}
	if err := h.checkSize("home truncate", in, c.Size); err != nil {
		return err
	}
	if c.Size < in.Size {
		h.cutBlocks(c.Ino, c.Size)
	}
	h.setSize(in, c.Size)
	in.Mtime, in.Ctime = c.Time, c.Time
	in.Version++
	return nil
}

// cutBlocks drops the data of ino at and past size.
func (h *homeState) cutBlocks(ino, size uint64) {
	blocks := h.blocks[ino]
	for idx, b := range blocks {
		start := idx * HomeBlockSize
		switch {
		case start >= size:
			delete(blocks, idx)
		case start+uint64(len(b)) > size:
			blocks[idx] = append([]byte(nil), b[:size-start]...)
		}
	}
	if len(blocks) == 0 {
		delete(h.blocks, ino)
	}
}

func applyHomeSetAttr(s *state, c HomeSetAttr) error {
	in, ok := s.home.inodes[c.Ino]
	if !ok {
		return fmt.Errorf("home setattr %d: %w", c.Ino, ErrNotFound)
	}
	if c.Mode != nil && *c.Mode&^0o7777 != 0 {
		return fmt.Errorf("home setattr %d: mode %o: %w", c.Ino, *c.Mode, ErrInvalid)
	}
	if c.Mode != nil {
		in.Mode = *c.Mode
	}
	if c.UID != nil {
		in.UID = *c.UID
	}
	if c.GID != nil {
		in.GID = *c.GID
	}
	if c.Atime != nil {
		in.Atime = *c.Atime
	}
	if c.Mtime != nil {
		in.Mtime = *c.Mtime
	}
	in.Ctime = c.Time
	return nil
}

func applyHomeLink(s *state, c HomeLink) error {
	h := s.home
	in, ok := h.inodes[c.Ino]
	if !ok {
		return fmt.Errorf("home link %d: %w", c.Ino, ErrNotFound)
	}
	d, err := h.dir(c.Parent)
	switch {
	case err != nil:
		return fmt.Errorf("home link %d into %d: %w", c.Ino, c.Parent, err)
	case in.Type == HomeDir:
		return fmt.Errorf("home link %d: %w", c.Ino, ErrIsDir)
	case !validName(c.Name):
		return fmt.Errorf("home link: name %q: %w", c.Name, ErrInvalid)
	case in.Nlink == math.MaxUint32:
		return fmt.Errorf("home link %d: too many links: %w", c.Ino, ErrInvalid)
	}
	if _, ok := d[c.Name]; ok {
		return fmt.Errorf("home link %q in %d: %w", c.Name, c.Parent, ErrExists)
	}
	d[c.Name] = c.Ino
	in.Nlink++
	in.Ctime = c.Time
	p := h.inodes[c.Parent]
	p.Mtime, p.Ctime = c.Time, c.Time
	return nil
}

func applyHomeUnlink(s *state, c HomeUnlink) error {
	h := s.home
	in, err := h.lookup(c.Parent, c.Name)
	if err != nil {
		return fmt.Errorf("home unlink %q in %d: %w", c.Name, c.Parent, err)
	}
	if in.Type == HomeDir {
		return fmt.Errorf("home unlink %q in %d: %w", c.Name, c.Parent, ErrIsDir)
	}
	h.removeEntry(c.Parent, c.Name, c.Time)
	return nil
}

func applyHomeRmdir(s *state, c HomeRmdir) error {
	h := s.home
	in, err := h.lookup(c.Parent, c.Name)
	if err != nil {
		return fmt.Errorf("home rmdir %q in %d: %w", c.Name, c.Parent, err)
	}
	if in.Type != HomeDir {
		return fmt.Errorf("home rmdir %q in %d: %w", c.Name, c.Parent, ErrNotDir)
	}
	if len(h.dirents[in.Ino]) > 0 {
		return fmt.Errorf("home rmdir %q in %d: %w", c.Name, c.Parent, ErrNotEmpty)
	}
	h.removeEntry(c.Parent, c.Name, c.Time)
	return nil
}

// removeEntry removes a checked entry: an empty directory goes at once, a
// file or symlink with its last link (data included).
func (h *homeState) removeEntry(parent uint64, name string, t time.Time) {
	ino := h.dirents[parent][name]
	in := h.inodes[ino]
	delete(h.dirents[parent], name)
	p := h.inodes[parent]
	p.Mtime, p.Ctime = t, t
	if in.Type == HomeDir {
		p.Nlink--
		h.dropInode(in)
		return
	}
	in.Nlink--
	in.Ctime = t
	if in.Nlink == 0 {
		h.dropInode(in)
	}
}

func (h *homeState) dropInode(in *HomeInode) {
	if in.Type == HomeFile {
		h.used -= in.Size
	}
	delete(h.inodes, in.Ino)
	delete(h.dirents, in.Ino)
	delete(h.blocks, in.Ino)
}

func applyHomeRename(s *state, c HomeRename) error {
	h := s.home
	what := fmt.Sprintf("home rename %q in %d to %q in %d", c.OldName, c.OldParent, c.NewName, c.NewParent)
	src, err := h.lookup(c.OldParent, c.OldName)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	newDir, err := h.dir(c.NewParent)
	if err != nil {
		return fmt.Errorf("%s: new parent: %w", what, err)
	}
	if !validName(c.NewName) {
		return fmt.Errorf("%s: %w", what, ErrInvalid)
	}
	if c.OldParent == c.NewParent && c.OldName == c.NewName {
		return nil
	}
	if src.Type == HomeDir {
		// The new parent must not be the directory or below it.
		for p := c.NewParent; ; p = h.inodes[p].Parent {
			if p == src.Ino {
				return fmt.Errorf("%s: into its own subtree: %w", what, ErrInvalid)
			}
			if p == HomeRootIno {
				break
			}
		}
	}
	if dstIno, ok := newDir[c.NewName]; ok {
		dst := h.inodes[dstIno]
		switch {
		case dstIno == src.Ino:
			// Two links to one file: rename(2) does nothing.
			return nil
		case src.Type == HomeDir && dst.Type != HomeDir:
			return fmt.Errorf("%s: %w", what, ErrNotDir)
		case src.Type != HomeDir && dst.Type == HomeDir:
			return fmt.Errorf("%s: %w", what, ErrIsDir)
		case dst.Type == HomeDir && len(h.dirents[dstIno]) > 0:
			return fmt.Errorf("%s: %w", what, ErrNotEmpty)
		}
		h.removeEntry(c.NewParent, c.NewName, c.Time)
	}
	delete(h.dirents[c.OldParent], c.OldName)
	newDir[c.NewName] = src.Ino
	src.Ctime = c.Time
	if src.Type == HomeDir && c.OldParent != c.NewParent {
		h.inodes[c.OldParent].Nlink--
		h.inodes[c.NewParent].Nlink++
		src.Parent = c.NewParent
	}
	for _, p := range []uint64{c.OldParent, c.NewParent} {
		h.inodes[p].Mtime, h.inodes[p].Ctime = c.Time, c.Time
	}
	return nil
}
