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

// View is node's view of the cluster.
type View struct {
	node  string
	c     Cluster
	tel   *telemetry.Table
	mover Mover
}

// New returns node's view.
func New(node string, c Cluster, tel *telemetry.Table, mover Mover) *View {
	return &View{node: node, c: c, tel: tel, mover: mover}
}

// FS is /cluster's view (fs.View).
func (v *View) FS() fs.View { return fsView{v} }
