// Package cluster is the ssi agent: it builds the subsystems of one node,
// starts and stops them in order and routes its two sockets (the local
// unix socket and the cluster port) to their handlers. It holds no
// subsystem logic of its own; ARCHITECTURE.md at the repository's root
// shows the packages and how one move flows through them.
package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/balance"
	"ssi/cluster/home"
	"ssi/cluster/jobs"
	"ssi/cluster/membership"
	"ssi/cluster/migration"
	"ssi/cluster/peer"
	"ssi/cluster/stdio"
	"ssi/cluster/telemetry"
	"ssi/cluster/transport"
	"ssi/cluster/view"
	"ssi/fs"
	"ssi/migrate"
	"ssi/raftstore"
)

// Config is the agent's part of the configuration.
type Config struct {
	NodeName      string
	BindAddr      string
	AdvertiseAddr string
	Port          int
	DataDir       string
	Socket        string
	// Membership is how this node joins and what it records when it
	// forms a cluster; its Node, Advertise, DataDir and Log are the
	// agent's to fill.
	Membership membership.Config
	// HomePath, if set, serves that shared directory as /cluster/home
	// instead of the Raft-replicated home.
	HomePath string
	// FS mounts /cluster when Mountpoint is set.
	Mountpoint   string
	AttrTimeout  time.Duration
	EntryTimeout time.Duration
	// HideOtherUsers hides other users' processes in /cluster/proc and
	// `ssi ps` (fs.hide_other_users).
	HideOtherUsers bool
	// ReadWait bounds how long a read waits for the read barrier without
	// quorum before it serves this replica (0: peer.DefaultReadWait).
	ReadWait time.Duration
	// CRIU runs migrations; CRIUWorkDir holds images in flight.
	CRIU        migrate.Config
	CRIUWorkDir string
	// MoveHooks are the tests' failure points of a move (nil: none).
	MoveHooks *migration.Hooks
	// PauseStart is the tests' failure point of a placed start
	// (jobs.Config.PauseStart); "" in production.
	PauseStart string
	// JobsMaxPerUser is how many cluster processes one uid other than
	// root may have at once (jobs.Config.MaxPerUser); 0: no limit.
	JobsMaxPerUser int
	// Balance is the balancer's policy; BalanceOff leaves automatic
	// moves out (balance.enabled false).
	Balance    balance.Config
	BalanceOff bool
}

// Agent is one node's daemon: its subsystems, wired together.
type Agent struct {
	cfg       Config
	log       *slog.Logger
	base      *slog.Logger // for the subsystems
	start     time.Time
	advertise string // host:port of the cluster port
	isMember  atomic.Bool

	peer     *peer.Cluster
	tel      *telemetry.Table
	members  *membership.Membership
	sessions *stdio.Sessions
	jobs     *jobs.Table
	mover    *migration.Mover
	balancer *balance.Loop
	view     *view.View
	metrics  *metrics
	mount    atomic.Pointer[fs.Mounted] // nil without /cluster
	mux      *transport.Mux             // set by becomeMember
	trust    *membership.Trust          // set by becomeMember
}

// NewAgent builds an agent's subsystems; Run starts them.
func NewAgent(cfg Config, log *slog.Logger) (*Agent, error) {
	if cfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("node name: %w", err)
		}
		cfg.NodeName = h
	}
	if err := transport.ValidNodeName(cfg.NodeName); err != nil {
		return nil, err
	}
	if cfg.Membership.JoinToken != "" {
		if err := transport.ValidToken(cfg.Membership.JoinToken); err != nil {
			return nil, fmt.Errorf("join token: %w", err)
		}
	}
	ip, err := membership.AdvertiseIP(cfg.AdvertiseAddr)
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: log.With("component", "agent"), base: log,
		advertise: net.JoinHostPort(ip, strconv.Itoa(cfg.Port)), tel: telemetry.NewTable(), metrics: newMetrics()}
	a.peer = peer.New(peer.Config{Node: cfg.NodeName, ReadWait: cfg.ReadWait, Log: a.log, Metrics: a.metrics})
	a.members = membership.New(a.membershipConfig(), a.peer, a.tel)
	a.sessions = stdio.NewSessions(a.listed, log.With("component", "stdio"))
	a.jobs = jobs.New(jobs.Config{Node: cfg.NodeName, DataDir: cfg.DataDir, MaxPerUser: cfg.JobsMaxPerUser,
		Place: a.placeBalance, PauseStart: cfg.PauseStart},
		a.peer, a.sessions, moveCluster{a.peer}.DialMigrate, log.With("component", "jobs"))
	criu := migrate.New(cfg.CRIU, log.With("component", "criu"))
	host := &migration.NodeHost{Node: cfg.NodeName, Mountpoint: cfg.Mountpoint, Flush: a.flushHome,
		JobInit: func() (string, error) { return jobs.InitPath(cfg.DataDir) }}
	a.mover = migration.New(migration.Config{Node: cfg.NodeName, WorkDir: cfg.CRIUWorkDir, Mountpoint: cfg.Mountpoint},
		criu, host, moveCluster{a.peer}, moveJobs{a.jobs, log}, a.placeBalance, cfg.MoveHooks, log.With("component", "migration"))
	a.metrics.reg.MustRegister(a.mover.Collectors()...)
	a.balancer = &balance.Loop{Node: cfg.NodeName, Interval: cfg.Membership.TelemetryInterval, Policy: cfg.Balance,
		Agreed: a.balanceAgreed, Samples: a.tel, Mover: a.mover, Log: log.With("component", "balance"), Off: cfg.BalanceOff,
		SetBlock: a.setBlock}
	a.view = view.New(cfg.NodeName, a.peer, a.tel, a.mover, view.Options{HideOtherUsers: cfg.HideOtherUsers})
	return a, nil
}

func (a *Agent) membershipConfig() membership.Config {
	c := a.cfg.Membership
	c.Node, c.Advertise, c.DataDir = a.cfg.NodeName, a.advertise, a.cfg.DataDir
	c.Log = a.base.With("component", "membership")
	return c
}

// Run serves until ctx is done, then leaves its listeners, mounts and
// Raft cleanly and removes its socket.
func (a *Agent) Run(ctx context.Context) error {
	a.start = time.Now()
	if err := os.MkdirAll(a.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	stopLocal, err := a.serveLocal()
	if err != nil {
		return err
	}
	defer stopLocal()

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(1)
	go func() { defer wg.Done(); a.members.Discover(ctx) }()
	a.log.Info("agent starting", "node", a.cfg.NodeName, "addr", a.advertise, "socket", a.cfg.Socket)

	id, formed, err := a.members.ObtainIdentity(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := a.becomeMember(id, formed); err != nil {
		return err
	}
	// The loops stop before the store and port they use close.
	defer func() {
		cancel()
		wg.Wait()
		a.leave()
	}()
	a.isMember.Store(true)
	a.log.Info("agent up", "node", a.cfg.NodeName, "cluster", id.ClusterID())
	if err := a.mountFS(); err != nil {
		return err
	}
	defer a.unmountFS()
	// Every node of one build holds the job init under the same name
	// before any process arrives: a move checks the destination has it.
	if p, err := jobs.InitPath(a.cfg.DataDir); err != nil {
		a.log.Warn("installing the job init", "err", err)
	} else {
		a.log.Debug("job init", "path", p)
	}
	a.runLoops(ctx, &wg, formed)
	<-ctx.Done()
	a.log.Info("agent stopping", "node", a.cfg.NodeName)
	return nil
}

// runLoops starts the node's loops. Registration needs a leader, hence a
// quorum: members restarting one by one must not wait for it before the
// next one starts.
func (a *Agent) runLoops(ctx context.Context, wg *sync.WaitGroup, formed bool) {
	pusher := &telemetry.Pusher{Node: a.cfg.NodeName, Interval: a.cfg.Membership.TelemetryInterval, Table: a.tel,
		Peers: a.peer, Procs: a.jobs.Samples}
	for _, loop := range []func(context.Context){
		func(ctx context.Context) { a.jobs.Adopt(ctx, a.mover) },
		a.balancer.Run,
		func(ctx context.Context) { jobs.SweepUnstarted(ctx, a.jobs) },
		func(ctx context.Context) { a.members.Announce(ctx, formed) },
		pusher.Run,
		a.members.LeaderLoop,
		a.trust.Run,
	} {
		wg.Add(1)
		go func() { defer wg.Done(); loop(ctx) }()
	}
}

// becomeMember opens the cluster port and the Raft store.
func (a *Agent) becomeMember(id *transport.Identity, formed bool) error {
	mux, err := transport.Listen(net.JoinHostPort(a.cfg.BindAddr, strconv.Itoa(a.cfg.Port)), id, transport.Options{
		Log:       a.base.With("component", "transport"),
		Advertise: a.advertise,
		Join:      a.members.JoinHandler(),
		IsMember:  a.memberAddr,
	})
	if err != nil {
		return err
	}
	store, err := raftstore.Open(raftstore.Config{
		NodeID: a.cfg.NodeName, Addr: a.advertise,
		DataDir: filepath.Join(a.cfg.DataDir, "raft"), Layer: mux.StreamLayer(transport.ProtoRaft),
		Logger: a.base, Bootstrap: formed, AskLeader: a.peer.AskReadIndex,
	})
	if err != nil {
		mux.Close()
		return err
	}
	a.mux = mux
	a.peer.Join(id, store)
	// Before the peer routes serve: they include the trust's.
	a.trust = membership.NewTrust(membership.TrustConfig{Node: a.cfg.NodeName, DataDir: a.cfg.DataDir,
		CertLifetime: a.cfg.Membership.CertLifetime, Drop: mux.Drop, Log: a.base.With("component", "trust")}, a.peer, id)
	peerSrv := &http.Server{Handler: a.peerHandler(), ReadHeaderTimeout: 5 * time.Second, ConnContext: api.ConnContext}
	go func() { _ = peerSrv.Serve(mux.Listener(transport.ProtoRPC)) }()
	go a.serveMigrations(mux.Listener(transport.ProtoMigrate))
	return nil
}

// memberAddr tells the cluster port a member's address from a stranger's
// (transport.Options.IsMember): an address of a node in the agreed
// state, as this replica has it, or this machine's loopback. Before the
// store opens, every other address is a stranger's.
func (a *Agent) memberAddr(ip netip.Addr) bool {
	if ip.IsLoopback() {
		return true
	}
	s, err := a.peer.Store()
	if err != nil {
		return false
	}
	for _, n := range s.Nodes() {
		if ap, err := netip.ParseAddrPort(n.Addr); err == nil && ap.Addr().Unmap() == ip {
			return true
		}
	}
	return false
}

// leave closes the store and the cluster port.
func (a *Agent) leave() {
	if s, err := a.peer.Store(); err == nil {
		_ = s.Close()
	}
	if a.mux != nil {
		_ = a.mux.Close()
	}
}

// mountFS mounts /cluster, if configured.
func (a *Agent) mountFS() error {
	if a.cfg.Mountpoint == "" {
		return nil
	}
	m, err := fs.Mount(a.view.FS(), fs.Options{Mountpoint: a.cfg.Mountpoint,
		AttrTimeout: a.cfg.AttrTimeout, EntryTimeout: a.cfg.EntryTimeout, Log: a.base.With("component", "fs"),
		Home: home.New(a.cfg.NodeName, a.peer), HomePath: a.cfg.HomePath})
	if err != nil {
		return fmt.Errorf("%w (run as root; fs.mountpoint \"\" runs without /cluster)", err)
	}
	a.mount.Store(m)
	a.log.Info("mounted", "at", a.cfg.Mountpoint)
	return nil
}

func (a *Agent) unmountFS() {
	if m := a.mount.Load(); m != nil {
		if err := m.Unmount(); err != nil {
			a.log.Warn("unmount", "err", err)
		}
	}
}

// flushHome commits the home writes this node buffers (a move's).
func (a *Agent) flushHome(ctx context.Context) error {
	if m := a.mount.Load(); m != nil {
		return m.FlushHome(ctx)
	}
	return nil
}
