package raftstore

import "fmt"

// The home tree's read side, served from this node's replica like every
// read (see read.go): safe alongside Apply, returns copies. Errors wrap
// ErrNotFound, ErrNotDir, ErrIsDir or ErrInvalid.

// homeReader reads the replicated /cluster/home tree from this node's
// replica, for the FUSE side. It owns nothing and changes nothing: the
// tree's writes are commands (home_cmd.go) applied through the Store.
type homeReader struct{ fsm *fsm }

// HomeLookup returns the inode called name in directory parent.
func (r homeReader) HomeLookup(parent uint64, name string) (HomeInode, error) {
	var in HomeInode
	var err error
	r.fsm.view(func(st *state) {
		var p *HomeInode
		if p, err = st.home.lookup(parent, name); err == nil {
			in = *p
		}
	})
	if err != nil {
		return HomeInode{}, fmt.Errorf("home lookup %q in %d: %w", name, parent, err)
	}
	return in, nil
}

// HomeGetattr returns inode ino.
func (r homeReader) HomeGetattr(ino uint64) (HomeInode, error) {
	var in HomeInode
	var ok bool
	r.fsm.view(func(st *state) {
		var p *HomeInode
		if p, ok = st.home.inodes[ino]; ok {
			in = *p
		}
	})
	if !ok {
		return HomeInode{}, fmt.Errorf("home getattr %d: %w", ino, ErrNotFound)
	}
	return in, nil
}

// HomeReaddir returns directory ino's entries, sorted by name, without
// "." and "..".
func (r homeReader) HomeReaddir(ino uint64) ([]HomeDirent, error) {
	var out []HomeDirent
	var err error
	r.fsm.view(func(st *state) { out, err = st.home.readdir(ino) })
	if err != nil {
		return nil, fmt.Errorf("home readdir %d: %w", ino, err)
	}
	return out, nil
}

// HomeRead returns up to n bytes of file ino from offset off: fewer at
// the end of the file, none past it. Holes read as zeros.
func (r homeReader) HomeRead(ino, off uint64, n int) ([]byte, error) {
	var out []byte
	var err error
	r.fsm.view(func(st *state) { out, err = st.home.read(ino, off, n) })
	if err != nil {
		return nil, fmt.Errorf("home read %d: %w", ino, err)
	}
	return out, nil
}

// HomeReadAt copies file ino's data from offset off into dest and returns
// how many bytes it copied: fewer than len(dest) at the end of the file,
// none past it. Holes read as zeros. It allocates nothing: the FUSE read
// path hands it its own buffer.
func (r homeReader) HomeReadAt(ino, off uint64, dest []byte) (int, error) {
	var n int
	var err error
	r.fsm.view(func(st *state) { n, err = st.home.readAt(ino, off, dest) })
	if err != nil {
		return 0, fmt.Errorf("home read %d: %w", ino, err)
	}
	return n, nil
}

// HomeReadlink returns symlink ino's target.
func (r homeReader) HomeReadlink(ino uint64) (string, error) {
	in, err := r.HomeGetattr(ino)
	if err != nil {
		return "", err
	}
	if in.Type != HomeSymlink {
		return "", fmt.Errorf("home readlink %d: not a symlink: %w", ino, ErrInvalid)
	}
	return in.Target, nil
}

// HomeStatfs returns the home tree's usage and limits.
func (r homeReader) HomeStatfs() HomeStats {
	var out HomeStats
	r.fsm.view(func(st *state) { out = st.home.stats() })
	return out
}
