package view

import (
	"context"
	"encoding/json"
	"time"

	"ssi/cluster/telemetry"
	"ssi/cluster/transport"
	"ssi/fs"
	"ssi/raftstore"
)

// Cluster is what the views read and write through (peer.Cluster).
type Cluster interface {
	Store() (*raftstore.Store, error)
	Apply(ctx context.Context, cmd raftstore.Command) (json.RawMessage, error)
	Fresh(ctx context.Context) (stale bool, err error)
	// ReadWait bounds a read's wait for the barrier.
	ReadWait() time.Duration
	// Stale reports that reads are served without the barrier.
	Stale() bool
	Identity() *transport.Identity
}

// Mover moves a process (migration.Mover).
type Mover interface {
	Migrate(ctx context.Context, cpid int, target string, uid uint32) error
}

// Options are the view's part of the configuration.
type Options struct {
	// HideOtherUsers hides other users' processes from /cluster/proc,
	// `ssi ps` and `ssi migrations`, like /proc's hidepid=2; root sees
	// all (fs.hide_other_users).
	HideOtherUsers bool
}

// View is node's view of the cluster.
type View struct {
	node  string
	c     Cluster
	tel   *telemetry.Table
	mover Mover
	o     Options
}

// New returns node's view.
func New(node string, c Cluster, tel *telemetry.Table, mover Mover, o Options) *View {
	return &View{node: node, c: c, tel: tel, mover: mover, o: o}
}

// visible reports whether uid may see a process of owner's.
func (v *View) visible(uid uint32, owner int) bool {
	return !v.o.HideOtherUsers || uid == 0 || int64(uid) == int64(owner)
}

// FS is /cluster's view (fs.View).
func (v *View) FS() fs.View { return fsView{v} }
