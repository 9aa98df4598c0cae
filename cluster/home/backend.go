package home

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"ssi/cluster/api"
	"ssi/fs"
	"ssi/raftstore"
)

// Cluster is what the home needs of the agent (peer.Cluster).
type Cluster interface {
	Store() (*raftstore.Store, error)
	Apply(ctx context.Context, cmd raftstore.Command) (json.RawMessage, error)
	Fresh(ctx context.Context) (stale bool, err error)
}

// Backend is /cluster/home on the Raft state: reads from this node's
// replica at local speed, writes committed through the leader. A write
// returns once it is on a quorum and applied here (read-your-writes); an
// open first catches this replica up with the leader (close-to-open).
type Backend struct {
	node string
	c    Cluster
}

var _ fs.Home = (*Backend)(nil)

// New returns node's home backend.
func New(node string, c Cluster) *Backend { return &Backend{node: node, c: c} }

// homeWait bounds how long a home call waits for the cluster; then the
// caller gets EROFS instead of hanging.
const homeWait = 15 * time.Second

func (h *Backend) store() (*raftstore.Store, error) {
	s, err := h.c.Store()
	if err != nil {
		return nil, api.HomeDomain(err)
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

func (h *Backend) Lookup(parent uint64, name string) (fs.HomeAttr, error) {
	s, err := h.store()
	if err != nil {
		return fs.HomeAttr{}, err
	}
	i, err := s.HomeLookup(parent, name)
	return toAttr(i), api.HomeDomain(err)
}

func (h *Backend) Getattr(ino uint64) (fs.HomeAttr, error) {
	s, err := h.store()
	if err != nil {
		return fs.HomeAttr{}, err
	}
	i, err := s.HomeGetattr(ino)
	return toAttr(i), api.HomeDomain(err)
}

func (h *Backend) Readdir(ino uint64) ([]fs.HomeEntry, error) {
	s, err := h.store()
	if err != nil {
		return nil, err
	}
	ents, err := s.HomeReaddir(ino)
	if err != nil {
		return nil, api.HomeDomain(err)
	}
	out := make([]fs.HomeEntry, 0, len(ents))
	for _, e := range ents {
		out = append(out, fs.HomeEntry{Name: e.Name, Ino: e.Ino, Kind: toAttr(raftstore.HomeInode{Type: e.Type}).Kind})
	}
	return out, nil
}

func (h *Backend) Read(ino, off uint64, dest []byte) (int, error) {
	s, err := h.store()
	if err != nil {
		return 0, err
	}
	n, err := s.HomeReadAt(ino, off, dest)
	return n, api.HomeDomain(err)
}

func (h *Backend) Readlink(ino uint64) (string, error) {
	s, err := h.store()
	if err != nil {
		return "", err
	}
	t, err := s.HomeReadlink(ino)
	return t, api.HomeDomain(err)
}

func (h *Backend) Statfs() fs.HomeUsage {
	s, err := h.store()
	if err != nil {
		return fs.HomeUsage{}
	}
	st := s.HomeStatfs()
	return fs.HomeUsage{Used: st.Used, Quota: st.Quota, Inodes: st.Inodes}
}

// Fresh is the read barrier (peer.Cluster.Fresh): without quorum it returns
// nil after the read wait, and the node serves its replica as it is.
func (h *Backend) Fresh(ctx context.Context) error {
	_, err := h.c.Fresh(ctx)
	return api.HomeDomain(err)
}

// commit applies cmd through the leader and waits until this replica has
// applied it too.
func (h *Backend) commit(ctx context.Context, cmd raftstore.Command) (raftstore.Result, error) {
	s, err := h.store()
	if err != nil {
		return raftstore.Result{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, homeWait)
	defer cancel()
	raw, err := h.c.Apply(ctx, cmd)
	if err != nil {
		return raftstore.Result{}, api.HomeDomain(err)
	}
	var res raftstore.Result
	if err := json.Unmarshal(raw, &res); err != nil {
		return res, fmt.Errorf("apply result: %w", err)
	}
	return res, api.HomeDomain(s.WaitApplied(ctx, res.Index))
}

func (h *Backend) Create(ctx context.Context, parent uint64, name string, kind fs.HomeKind, mode, uid, gid uint32, target string) (fs.HomeAttr, error) {
	res, err := h.commit(ctx, raftstore.HomeCreate{Parent: parent, Name: name, Kind: fromKind(kind),
		Mode: mode, UID: uid, GID: gid, Target: target, Time: time.Now()})
	if err != nil {
		return fs.HomeAttr{}, err
	}
	return h.Getattr(res.Ino)
}

func (h *Backend) Write(ctx context.Context, ino uint64, extents []fs.Extent) error {
	ext := make([]raftstore.HomeExtent, len(extents))
	for i, e := range extents {
		ext[i] = raftstore.HomeExtent{Off: e.Off, Data: e.Data}
	}
	_, err := h.commit(ctx, raftstore.HomeWrite{Ino: ino, Extents: ext, Time: time.Now()})
	return err
}

func (h *Backend) SetAttr(ctx context.Context, ino uint64, a fs.HomeSetAttr) error {
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

func (h *Backend) Link(ctx context.Context, ino, parent uint64, name string) (fs.HomeAttr, error) {
	if _, err := h.commit(ctx, raftstore.HomeLink{Ino: ino, Parent: parent, Name: name, Time: time.Now()}); err != nil {
		return fs.HomeAttr{}, err
	}
	return h.Getattr(ino)
}

func (h *Backend) Unlink(ctx context.Context, parent uint64, name string) error {
	_, err := h.commit(ctx, raftstore.HomeUnlink{Parent: parent, Name: name, Time: time.Now()})
	return err
}

func (h *Backend) Rmdir(ctx context.Context, parent uint64, name string) error {
	_, err := h.commit(ctx, raftstore.HomeRmdir{Parent: parent, Name: name, Time: time.Now()})
	return err
}

func (h *Backend) Rename(ctx context.Context, oldParent uint64, oldName string, newParent uint64, newName string) error {
	_, err := h.commit(ctx, raftstore.HomeRename{OldParent: oldParent, OldName: oldName,
		NewParent: newParent, NewName: newName, Time: time.Now()})
	return err
}

// Node is this agent's node name.
func (h *Backend) Node() string { return h.node }
