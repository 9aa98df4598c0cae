package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"ssi/fs"
	"ssi/raftstore"
)

// homeBackend is /cluster/home on the Raft state: reads from this node's
// replica at local speed, writes committed through the leader. A write
// returns once it is on a quorum and applied here (read-your-writes); an
// open first catches this replica up with the leader (close-to-open).
type homeBackend struct{ a *Agent }

var _ fs.Home = homeBackend{}

// homeWait bounds how long a home call waits for the cluster; then the
// caller gets EROFS instead of hanging.
const homeWait = 15 * time.Second

func (h homeBackend) store() (*raftstore.Store, error) {
	s, err := h.a.member()
	if err != nil {
		return nil, homeError(err)
	}
	return s, nil
}

func toAttr(i raftstore.HomeInode) fs.HomeAttr {
	k := fs.HomeFile
	switch i.Type {
	case raftstore.HomeDir:
		k = fs.HomeDir
	case raftstore.HomeSymlink:
		k = fs.HomeSymlink
	}
	return fs.HomeAttr{Ino: i.Ino, Kind: k, Mode: i.Mode, UID: i.UID, GID: i.GID, Size: i.Size,
		Nlink: i.Nlink, Atime: i.Atime, Mtime: i.Mtime, Ctime: i.Ctime, Version: i.Version}
}

func fromKind(k fs.HomeKind) raftstore.HomeFileType {
	switch k {
	case fs.HomeDir:
		return raftstore.HomeDir
	case fs.HomeSymlink:
		return raftstore.HomeSymlink
	}
	return raftstore.HomeFile
}

func (h homeBackend) Lookup(parent uint64, name string) (fs.HomeAttr, error) {
	s, err := h.store()
	if err != nil {
		return fs.HomeAttr{}, err
	}
	i, err := s.HomeLookup(parent, name)
	return toAttr(i), homeError(err)
}

func (h homeBackend) Getattr(ino uint64) (fs.HomeAttr, error) {
	s, err := h.store()
	if err != nil {
		return fs.HomeAttr{}, err
	}
	i, err := s.HomeGetattr(ino)
	return toAttr(i), homeError(err)
}

func (h homeBackend) Readdir(ino uint64) ([]fs.HomeEntry, error) {
	s, err := h.store()
	if err != nil {
		return nil, err
	}
	ents, err := s.HomeReaddir(ino)
	if err != nil {
		return nil, homeError(err)
	}
	out := make([]fs.HomeEntry, 0, len(ents))
	for _, e := range ents {
		out = append(out, fs.HomeEntry{Name: e.Name, Ino: e.Ino, Kind: toAttr(raftstore.HomeInode{Type: e.Type}).Kind})
	}
	return out, nil
}

func (h homeBackend) Read(ino, off uint64, dest []byte) (int, error) {
	s, err := h.store()
	if err != nil {
		return 0, err
	}
	n, err := s.HomeReadAt(ino, off, dest)
	return n, homeError(err)
}

func (h homeBackend) Readlink(ino uint64) (string, error) {
	s, err := h.store()
	if err != nil {
		return "", err
	}
	t, err := s.HomeReadlink(ino)
	return t, homeError(err)
}

func (h homeBackend) Statfs() fs.HomeUsage {
	s, err := h.store()
	if err != nil {
		return fs.HomeUsage{}
	}
	st := s.HomeStatfs()
	return fs.HomeUsage{Used: st.Used, Quota: st.Quota, Inodes: st.Inodes}
}

// Fresh is the read barrier (see fresh.go): without quorum it returns
// nil after the read wait, and the node serves its replica as it is.
func (h homeBackend) Fresh(ctx context.Context) error {
	_, err := h.a.fresh(ctx)
	return homeError(err)
}

// commit applies cmd through the leader and waits until this replica has
// applied it too.
func (h homeBackend) commit(ctx context.Context, cmd raftstore.Command) (raftstore.Result, error) {
	s, err := h.store()
	if err != nil {
		return raftstore.Result{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, homeWait)
	defer cancel()
	raw, err := h.a.apply(ctx, cmd)
	if err != nil {
		return raftstore.Result{}, homeError(err)
	}
	var res raftstore.Result
	if err := json.Unmarshal(raw, &res); err != nil {
		return res, fmt.Errorf("apply result: %w", err)
	}
	return res, homeError(s.WaitApplied(ctx, res.Index))
}

func (h homeBackend) Create(ctx context.Context, parent uint64, name string, kind fs.HomeKind, mode, uid, gid uint32, target string) (fs.HomeAttr, error) {
	res, err := h.commit(ctx, raftstore.HomeCreate{Parent: parent, Name: name, Kind: fromKind(kind),
		Mode: mode, UID: uid, GID: gid, Target: target, Time: time.Now()})
	if err != nil {
		return fs.HomeAttr{}, err
	}
	return h.Getattr(res.Ino)
}

func (h homeBackend) Write(ctx context.Context, ino uint64, extents []fs.Extent) error {
	ext := make([]raftstore.HomeExtent, len(extents))
	for i, e := range extents {
		ext[i] = raftstore.HomeExtent{Off: e.Off, Data: e.Data}
	}
	_, err := h.commit(ctx, raftstore.HomeWrite{Ino: ino, Extents: ext, Time: time.Now()})
	return err
}

func (h homeBackend) SetAttr(ctx context.Context, ino uint64, a fs.HomeSetAttr) error {
	now := time.Now()
	if a.Size != nil {
		if _, err := h.commit(ctx, raftstore.HomeTruncate{Ino: ino, Size: *a.Size, Time: now}); err != nil {
			return err
		}
	}
	if a.Mode == nil && a.UID == nil && a.GID == nil && a.Atime == nil && a.Mtime == nil {
		return nil
	}
	_, err := h.commit(ctx, raftstore.HomeSetAttr{Ino: ino, Mode: a.Mode, UID: a.UID, GID: a.GID,
		Atime: a.Atime, Mtime: a.Mtime, Time: now})
	return err
}

func (h homeBackend) Link(ctx context.Context, ino, parent uint64, name string) (fs.HomeAttr, error) {
	if _, err := h.commit(ctx, raftstore.HomeLink{Ino: ino, Parent: parent, Name: name, Time: time.Now()}); err != nil {
		return fs.HomeAttr{}, err
	}
	return h.Getattr(ino)
}

func (h homeBackend) Unlink(ctx context.Context, parent uint64, name string) error {
	_, err := h.commit(ctx, raftstore.HomeUnlink{Parent: parent, Name: name, Time: time.Now()})
	return err
}

func (h homeBackend) Rmdir(ctx context.Context, parent uint64, name string) error {
	_, err := h.commit(ctx, raftstore.HomeRmdir{Parent: parent, Name: name, Time: time.Now()})
	return err
}

func (h homeBackend) Rename(ctx context.Context, oldParent uint64, oldName string, newParent uint64, newName string) error {
	_, err := h.commit(ctx, raftstore.HomeRename{OldParent: oldParent, OldName: oldName,
		NewParent: newParent, NewName: newName, Time: time.Now()})
	return err
}

// Node is this agent's node name.
func (h homeBackend) Node() string { return h.a.cfg.NodeName }

// homeError maps the store's errors to the file system's.
func homeError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raftstore.ErrNotFound):
		return fmt.Errorf("%w: %v", fs.ErrNotFound, err)
	case errors.Is(err, raftstore.ErrExists):
		return fmt.Errorf("%w: %v", fs.ErrExists, err)
	case errors.Is(err, raftstore.ErrNotEmpty):
		return fmt.Errorf("%w: %v", fs.ErrNotEmpty, err)
	case errors.Is(err, raftstore.ErrIsDir):
		return fmt.Errorf("%w: %v", fs.ErrIsDir, err)
	case errors.Is(err, raftstore.ErrNotDir):
		return fmt.Errorf("%w: %v", fs.ErrNotDir, err)
	case errors.Is(err, raftstore.ErrFileTooBig):
		return fmt.Errorf("%w: %v", fs.ErrTooBig, err)
	case errors.Is(err, raftstore.ErrNoSpace):
		return fmt.Errorf("%w: %v", fs.ErrNoSpace, err)
	}
	return fsError(err)
}
