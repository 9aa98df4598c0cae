package migration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/peer"
	"ssi/cluster/transport"
	"ssi/fs"
	"ssi/raftstore"
)

// Timeout bounds one migration's stream and restore.
const Timeout = 10 * time.Minute

// Config is what a Mover needs to know of its node.
type Config struct {
	Node string
	// WorkDir holds the images of moves in flight.
	WorkDir string
	// Mountpoint is /cluster's: a tree's files below it travel by name.
	Mountpoint string
	// SettleWait bounds how long a move waits for its outcome to be
	// recorded before it returns, the copies stopped, and leaves the
	// asking to the background (settleLater). 0 means two minutes.
	SettleWait time.Duration
}

// Mover runs this node's side of every migration: the source's for
// processes running here, the destination's for those arriving.
type Mover struct {
	cfg     Config
	log     *slog.Logger
	cp      Checkpointer
	host    Host
	cluster Cluster
	jobs    Jobs
	place   Placer
	metrics *metrics
	// hooks are the tests' crash and failure points (nil in the agent).
	hooks *Hooks
}

// New returns a Mover; hooks may be nil.
func New(cfg Config, cp Checkpointer, host Host, c Cluster, jobs Jobs, place Placer, hooks *Hooks, log *slog.Logger) *Mover {
	if hooks == nil {
		hooks = &Hooks{}
	}
	if cfg.SettleWait <= 0 {
		cfg.SettleWait = settleWait
	}
	return &Mover{cfg: cfg, log: log, cp: cp, host: host, cluster: c, jobs: jobs, place: place,
		metrics: newMetrics(), hooks: hooks}
}

// Migrate moves cpid to target ("NODE", "home" or "balance") on behalf
// of uid and returns when it is done. Errors wrap fs's domain errors,
// which say the errno.
func (m *Mover) Migrate(ctx context.Context, cpid int, target string, uid uint32) (err error) {
	// EIO never answers a valid request: a failure the contract has no
	// errno for is the process's inability to move (cantmove says why).
	defer func() {
		if err != nil && fs.ErrnoName(err) == "EIO" {
			err = fmt.Errorf("%w: %v", fs.ErrCannotMove, err)
		}
	}()
	// A caller that goes away (an interrupted writer, ssi migrate ^C, a
	// peer's timeout) must not cut a move short: the process may be
	// stopped in the middle of it.
	ctx = context.WithoutCancel(ctx)
	s, err := m.cluster.Store()
	if err != nil {
		return api.Domain(err)
	}
	p, ok := peer.FindProc(ctx, m.cluster, s, cpid)
	if !ok {
		return fs.ErrNoProcess
	}
	if uid != 0 && int(uid) != p.UID {
		return fmt.Errorf("%w: process %d belongs to uid %d", fs.ErrPermission, cpid, p.UID)
	}
	to, err := m.resolveTarget(s, p, strings.TrimSpace(target))
	if err != nil || to == "" {
		return err
	}
	if p.State == raftstore.ProcMigrating {
		return fmt.Errorf("%w: process %d is migrating", fs.ErrBusy, cpid)
	}
	if p.Node == m.cfg.Node {
		return m.out(ctx, cpid, to, false)
	}
	if n, ok := s.Node(p.Node); !ok || n.Addr == "" {
		return fmt.Errorf("%w: process %d is on %s, which is unknown", fs.ErrNodeDown, cpid, p.Node)
	}
	return m.ask(ctx, p.Node, api.MigrateRequest{CPID: cpid, Target: to, UID: uid})
}

// resolveTarget turns a write to `where` into a node name; "" means
// there is nothing to do (already home, already the best place).
func (m *Mover) resolveTarget(s *raftstore.Store, p raftstore.Proc, target string) (string, error) {
	switch target {
	case "home":
		if p.Node == p.Home {
			return "", nil
		}
		target = p.Home
	case "balance":
		best := m.place(s, p.Node)
		if best == "" || best == p.Node {
			return "", nil
		}
		target = best
	}
	if transport.ValidNodeName(target) != nil {
		return "", fmt.Errorf("%w: %q is not a node, \"home\" or \"balance\"", fs.ErrBadValue, target)
	}
	n, ok := s.Node(target)
	switch {
	case !ok:
		return "", fmt.Errorf("%w: no node called %q", fs.ErrBadValue, target)
	case target == p.Node:
		return "", fmt.Errorf("%w: process %d already runs on %s", fs.ErrBadValue, p.CPID, target)
	case n.State != raftstore.NodeUp:
		return "", fmt.Errorf("%w: %s is %s", fs.ErrNodeDown, target, n.State)
	case n.Admin.Block:
		return "", fmt.Errorf("%w: %s refuses arriving processes (block)", fs.ErrNodeDown, target)
	}
	return target, nil
}

// ask has the agent where the process runs move it.
func (m *Mover) ask(ctx context.Context, node string, req api.MigrateRequest) error {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	err := m.cluster.Call(ctx, node, "/v1/migrate", req, nil)
	if errors.Is(err, api.ErrRetry) {
		return fmt.Errorf("%w: asking %s: %v", fs.ErrNodeDown, node, err)
	}
	return err
}

// HandlePeer moves a process that runs here, for another node.
func (m *Mover) HandlePeer(w http.ResponseWriter, r *http.Request) {
	var req api.MigrateRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		api.WriteErrno(w, fmt.Errorf("%w: %v", fs.ErrBadValue, err))
		return
	}
	// The uid is the sending node's word for its user: bound to what
	// that node may vouch for (root only on its own processes).
	s, err := m.cluster.Store()
	if err != nil {
		api.WriteErrno(w, api.Domain(err))
		return
	}
	req.UID = uint32(peer.ClaimedUID(r, m.cluster, s, req.CPID, int(req.UID)))
	m.serve(w, r, req)
}

// HandleLocal is `ssi migrate`, as the calling user.
func (m *Mover) HandleLocal(w http.ResponseWriter, r *http.Request) {
	uid, _, ok := api.PeerCred(api.ConnOf(r))
	if !ok {
		api.WriteErrno(w, fmt.Errorf("%w: cannot tell who is asking", fs.ErrPermission))
		return
	}
	var req api.MigrateRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		api.WriteErrno(w, fmt.Errorf("%w: %v", fs.ErrBadValue, err))
		return
	}
	req.UID = uid
	m.serve(w, r, req)
}

func (m *Mover) serve(w http.ResponseWriter, r *http.Request, req api.MigrateRequest) {
	if err := m.Migrate(r.Context(), req.CPID, req.Target, req.UID); err != nil {
		api.WriteErrno(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, struct{}{})
}
