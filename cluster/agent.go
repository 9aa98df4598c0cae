// Package cluster is the ssi agent: it finds or forms the cluster, keeps
// the cluster's agreed state (raftstore) and exchanges load telemetry,
// serves local commands on a unix socket and peers on the authenticated
// cluster port (cluster/transport).
//
// Membership: a new agent holding a join token listens for discovery
// beacons (and tries its configured seeds); it joins a member it hears,
// or, if nobody is a member yet, the seeker with the smallest name forms
// the cluster. A member that comes back with its state directory needs no
// token. The leader admits nodes as voters up to cluster.voters, then as
// non-voters, marks nodes down when their telemetry stops, promotes
// non-voters to keep the voter count, and removes nodes gone longer than
// cluster.remove_after.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ssi/cluster/discovery"
	"ssi/cluster/transport"
	"ssi/fs"
	"ssi/migrate"
	"ssi/raftstore"
)

// Config is the agent's part of the configuration.
type Config struct {
	NodeName          string
	BindAddr          string
	AdvertiseAddr     string
	Port              int
	DataDir           string
	Socket            string
	JoinToken         string
	Join              []string
	Discovery         bool
	DiscoveryGroup    string
	DiscoveryInterval time.Duration
	DiscoveryWait     time.Duration
	Voters            int
	RemoveAfter       time.Duration
	TelemetryInterval time.Duration
	// HomeMaxFileSize and HomeQuota are the home's limits, recorded when
	// this node forms the cluster.
	HomeMaxFileSize uint64
	HomeQuota       uint64
	// HomePath, if set, serves that shared directory as /cluster/home
	// instead of the Raft-replicated home.
	HomePath string
	// FS mounts /cluster when Mountpoint is set.
	Mountpoint   string
	AttrTimeout  time.Duration
	EntryTimeout time.Duration
	// ReadWait bounds how long a read waits for the read barrier without
	// quorum before it serves this replica (0: defaultReadWait).
	ReadWait time.Duration
	// CRIU runs migrations; CRIUWorkDir holds images in flight.
	CRIU        migrate.Config
	CRIUWorkDir string
}

// Agent is one node's daemon.
type Agent struct {
	cfg         Config
	log         *slog.Logger
	base        *slog.Logger // for the components the agent starts
	start       time.Time
	advertiseIP string
	advertise   string // host:port of the cluster port

	table     *discovery.Table // nil without discovery
	joinedVia string           // the member that admitted us, this run
	isMember  atomic.Bool
	telemetry *Telemetry

	// Set once the node is a member; read by handlers after that.
	mu    sync.RWMutex // protects id, mux, store
	id    *transport.Identity
	mux   *transport.Mux
	store *raftstore.Store
	peers *http.Client

	criu    *migrate.Client
	metrics *metrics
	// Cluster processes running here, attached callers' sessions (this
	// node is their home) and why each one's last migration failed.
	jobsMu      sync.Mutex
	jobs        map[int]*job
	sessions    map[int]*session
	lastFailure map[int]string
	adopted     chan struct{} // closed once adoptJobs is done

	// stale is set while reads are served without the read barrier.
	stale atomic.Bool
	// noBarrier: root switched the barrier off for a bench's baseline.
	noBarrier atomic.Bool
	mount     atomic.Pointer[fs.Mounted] // nil without /cluster

}

// NewAgent returns an agent; Run starts it.
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
	if cfg.JoinToken != "" {
		if err := transport.ValidToken(cfg.JoinToken); err != nil {
			return nil, fmt.Errorf("join token: %w", err)
		}
	}
	ip, err := advertiseIP(cfg.AdvertiseAddr)
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: log.With("component", "agent"), base: log, advertiseIP: ip,
		advertise: net.JoinHostPort(ip, strconv.Itoa(cfg.Port)), telemetry: NewTelemetry(),
		jobs: map[int]*job{}, sessions: map[int]*session{}, lastFailure: map[int]string{},
		adopted: make(chan struct{})}
	a.criu = migrate.New(cfg.CRIU, log.With("component", "criu"))
	a.metrics = newMetrics()
	return a, nil
}

// Run serves until ctx is done, then leaves its listeners, mounts and
// Raft cleanly and removes its socket.
func (a *Agent) Run(ctx context.Context) error {
	a.start = time.Now()
	if err := os.MkdirAll(a.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	unixL, err := listenUnix(a.cfg.Socket)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: a.localHandler(), ReadHeaderTimeout: 5 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		}}
	go func() { _ = srv.Serve(unixL) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = os.Remove(a.cfg.Socket)
	}()

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if a.cfg.Discovery && a.cfg.JoinToken != "" {
		a.table = discovery.NewTable(transport.TokenTag(a.cfg.JoinToken), a.cfg.NodeName)
		wg.Add(1)
		go func() {
			defer wg.Done()
			dc := discovery.Config{Group: a.cfg.DiscoveryGroup, Interval: a.cfg.DiscoveryInterval}
			if err := discovery.Run(ctx, dc, a.table, a.beacon, a.log); err != nil {
				a.log.Warn("discovery off", "err", err)
			}
		}()
	}
	a.log.Info("agent starting", "node", a.cfg.NodeName, "addr", a.advertise, "socket", a.cfg.Socket)

	id, formed, err := a.obtainIdentity(ctx)
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
	a.log.Info("agent up", "node", a.cfg.NodeName, "cluster", clusterID(id))

	if a.cfg.Mountpoint != "" {
		m, err := fs.Mount(fsView{a}, fs.Options{Mountpoint: a.cfg.Mountpoint,
			AttrTimeout: a.cfg.AttrTimeout, EntryTimeout: a.cfg.EntryTimeout, Log: a.base.With("component", "fs"),
			Home: homeBackend{a}, HomePath: a.cfg.HomePath})
		if err != nil {
			return fmt.Errorf("%w (run as root; fs.mountpoint \"\" runs without /cluster)", err)
		}
		defer func() {
			if err := m.Unmount(); err != nil {
				a.log.Warn("unmount", "err", err)
			}
		}()
		a.mount.Store(m)
		a.log.Info("mounted", "at", a.cfg.Mountpoint)
	}

	// Every node of one build holds the job init under the same name
	// before any process arrives: a move checks the destination has it.
	if p, err := a.jobInitPath(); err != nil {
		a.log.Warn("installing the job init", "err", err)
	} else {
		a.log.Debug("job init", "path", p)
	}

	// Registration needs a leader, hence a quorum: members restarting one
	// by one must not wait for it before the next one starts.
	wg.Add(5)
	go func() { defer wg.Done(); a.adoptJobs(ctx) }()
	go func() { defer wg.Done(); a.adminLoop(ctx) }()
	go func() { defer wg.Done(); a.announce(ctx, formed) }()
	go func() { defer wg.Done(); a.telemetryLoop(ctx) }()
	go func() { defer wg.Done(); a.leaderLoop(ctx) }()
	<-ctx.Done()
	a.log.Info("agent stopping", "node", a.cfg.NodeName)
	return nil
}

// becomeMember opens the cluster port and the Raft store.
func (a *Agent) becomeMember(id *transport.Identity, formed bool) error {
	mux, err := transport.Listen(net.JoinHostPort(a.cfg.BindAddr, strconv.Itoa(a.cfg.Port)), id, transport.Options{
		Log:       a.base.With("component", "transport"),
		Advertise: a.advertise,
		Join:      &transport.JoinHandler{Tokens: a.tokenHashes, Admit: a.admit},
	})
	if err != nil {
		return err
	}
	store, err := raftstore.Open(raftstore.Config{
		NodeID: a.cfg.NodeName, Addr: a.advertise,
		DataDir: filepath.Join(a.cfg.DataDir, "raft"), Layer: mux.StreamLayer(transport.ProtoRaft),
		Logger: a.base, Bootstrap: formed, AskLeader: a.askReadIndex,
	})
	if err != nil {
		mux.Close()
		return err
	}
	a.mu.Lock()
	a.id, a.mux, a.store = id, mux, store
	a.peers = peerClient(id)
	a.mu.Unlock()
	peerSrv := &http.Server{
		Handler:           a.peerHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
	}
	go func() { _ = peerSrv.Serve(mux.Listener(transport.ProtoRPC)) }()
	go a.serveMigrations(mux.Listener(transport.ProtoMigrate))
	return nil
}

// announce records the token a new cluster was formed with, then
// registers this node with the leader.
func (a *Agent) announce(ctx context.Context, formed bool) {
	if formed && a.cfg.JoinToken != "" {
		for {
			_, err := a.apply(ctx, raftstore.TokenAdd{Hash: transport.TokenHash(a.cfg.JoinToken), CreatedAt: time.Now()})
			if err == nil || errors.Is(err, raftstore.ErrExists) || ctx.Err() != nil {
				break
			}
			a.log.Warn("recording the join token", "err", err)
		}
	}
	if formed {
		for {
			_, err := a.apply(ctx, raftstore.HomeConfig{MaxFileSize: a.cfg.HomeMaxFileSize, Quota: a.cfg.HomeQuota})
			if err == nil || ctx.Err() != nil {
				break
			}
			a.log.Warn("recording the home's limits", "err", err)
		}
	}
	if err := a.register(ctx); err == nil {
		a.log.Info("registered", "node", a.cfg.NodeName)
	}
}

// register tells the leader who and where this node is, until it has
// listened: a new node becomes a Raft server and a node in the state, a
// returning one gets its address and resources refreshed.
func (a *Agent) register(ctx context.Context) error {
	s := NewSampler(a.cfg.NodeName).Sample(time.Now())
	req := joinRequest{Name: a.cfg.NodeName, Addr: a.advertise, CPUs: s.CPUs, Memory: s.MemTotal}
	body, _ := json.Marshal(req)
	for {
		// A new node does not know the leader until it is a Raft server:
		// it asks any member it knows, which passes the request on.
		var err error
		for _, t := range a.registerTargets() {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = a.post(sctx, t, "/v1/join", body, nil)
			cancel()
			if err == nil {
				return nil
			}
		}
		a.log.Debug("registering with the leader", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// registerTargets are the members to register with: the leader if known,
// else the member we joined through and those in our Raft configuration.
func (a *Agent) registerTargets() []string {
	s, err := a.member()
	if err != nil {
		return nil
	}
	if _, addr := s.Leader(); addr != "" {
		return []string{addr}
	}
	var out []string
	if a.joinedVia != "" {
		out = append(out, a.joinedVia)
	}
	servers, _ := s.Servers()
	for _, srv := range servers {
		if srv.ID != a.cfg.NodeName {
			out = append(out, srv.Addr)
		}
	}
	return out
}

// leave closes the store and the cluster port.
func (a *Agent) leave() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.store != nil {
		_ = a.store.Close()
	}
	if a.mux != nil {
		_ = a.mux.Close()
	}
}

// member returns the store and identity, or an error before the node is
// a member.
func (a *Agent) member() (*raftstore.Store, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.store == nil {
		return nil, errNotMember
	}
	return a.store, nil
}

var errNotMember = errors.New("this node has not joined a cluster yet")

// identity is this node's certificate, once a member.
func (a *Agent) identity() *transport.Identity {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.id
}

// nodeAddr is the cluster address of node name.
func (a *Agent) nodeAddr(name string) (string, error) {
	s, err := a.member()
	if err != nil {
		return "", err
	}
	n, ok := s.Node(name)
	if !ok || n.Addr == "" {
		return "", fmt.Errorf("node %q is unknown", name)
	}
	return n.Addr, nil
}

// tokenHashes are the join tokens valid now, for the join handshake.
func (a *Agent) tokenHashes() []string {
	s, err := a.member()
	if err != nil {
		return nil
	}
	var out []string
	for _, t := range s.TokenHashes() {
		out = append(out, t.Hash)
	}
	return out
}

// admit refuses a newcomer whose name is taken by a node that is up.
func (a *Agent) admit(name string, _ []net.IP) error {
	s, err := a.member()
	if err != nil {
		return err
	}
	if n, ok := s.Node(name); ok && n.State == raftstore.NodeUp && name != a.cfg.NodeName {
		if _, seen := a.telemetry.Get(name); seen {
			return fmt.Errorf("node name %q is taken by a live node", name)
		}
	}
	return nil
}

// listenUnix listens on path, replacing a socket left by a crashed agent
// but refusing to steal one that a live agent answers on.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("socket %s: another agent is running", path)
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	// Local commands of every user reach the agent; it checks who asks.
	_ = os.Chmod(path, 0o666)
	return l, nil
}

func randomID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// clusterID is the id the cluster's CA was made with.
func clusterID(id *transport.Identity) string {
	if id == nil || id.CA == nil || id.CA.Cert == nil {
		return ""
	}
	return strings.TrimPrefix(id.CA.Cert.Subject.CommonName, "ssi cluster ca ")
}
