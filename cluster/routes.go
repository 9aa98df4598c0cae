package cluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/balance"
	"ssi/cluster/jobs"
	"ssi/cluster/membership"
	"ssi/cluster/peer"
	"ssi/cluster/transport"
	"ssi/cluster/wire"
)

// localHandler is the local socket's routing table: commands of this
// node's users. Each handler belongs to the subsystem it serves.
func (a *Agent) localHandler() http.Handler {
	fresh := a.peer.FreshRead
	m := http.NewServeMux()
	m.HandleFunc("GET /v1/health", a.handleHealth)
	m.HandleFunc("GET /v1/nodes", fresh(a.view.HandleNodes))
	m.HandleFunc("GET /v1/status", fresh(a.view.HandleStatus))
	tokens := a.members.Tokens()
	m.HandleFunc("POST /v1/tokens", api.RootOnly(tokens.HandleCreate))
	m.HandleFunc("GET /v1/tokens", api.RootOnly(fresh(tokens.HandleList)))
	m.HandleFunc("POST /v1/tokens/revoke", api.RootOnly(fresh(tokens.HandleRevoke)))
	m.HandleFunc("POST /v1/admin", api.RootOnly(a.view.HandleAdmin))
	m.HandleFunc("POST /v1/run", a.jobs.HandleRun)
	m.HandleFunc("POST /v1/migrate", a.mover.HandleLocal)
	m.HandleFunc("GET /v1/procs", fresh(a.view.HandleProcs))
	m.HandleFunc("POST /v1/kill", a.jobs.HandleKill)
	m.HandleFunc("GET /v1/wait", a.jobs.HandleWait)
	m.HandleFunc("GET /v1/migrations", fresh(a.view.HandleMoves))
	m.HandleFunc("GET "+balance.ExplainPath, a.balancer.HandleLocal(a.peer, a.explainVisible))
	m.HandleFunc("POST /v1/drain", api.RootOnly(a.balancer.HandleDrain))
	m.Handle("GET /metrics", a.metrics.handler())
	m.HandleFunc("POST /v1/debug/raftbench", api.RootOnly(a.handleRaftBench))
	m.HandleFunc("POST /v1/debug/barrier", api.RootOnly(a.handleBarrierSwitch))
	// Profiles, for measuring before optimising (root only).
	m.HandleFunc("GET /debug/pprof/", api.RootOnly(pprof.Index))
	m.HandleFunc("GET /debug/pprof/profile", api.RootOnly(pprof.Profile))
	return m
}

// peerHandler is the cluster port's routing table: other agents'
// requests, mutually authenticated.
func (a *Agent) peerHandler() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("POST "+peer.ApplyPath, a.peer.HandleApply)
	m.HandleFunc("POST /v1/join", a.members.HandleJoin)
	m.HandleFunc("POST "+membership.CAPath, a.trust.HandleCA)
	m.HandleFunc("POST "+membership.RenewPath, a.trust.HandleRenew)
	m.HandleFunc("POST /v1/telemetry", a.tel.Handle)
	m.HandleFunc("POST /v1/applied", a.peer.HandleApplied)
	m.HandleFunc("POST /v1/migrate", a.mover.HandlePeer)
	m.HandleFunc("POST /v1/kill", a.jobs.HandlePeerKill)
	m.HandleFunc("POST "+balance.ExplainPath, a.balancer.HandlePeer)
	m.HandleFunc("POST "+jobs.StartPath, a.jobs.HandleStart)
	return m
}

// serveLocal listens on the local socket; the returned func stops it
// and removes the socket.
func (a *Agent) serveLocal() (func(), error) {
	l, err := listenUnix(a.cfg.Socket)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: a.localHandler(), ReadHeaderTimeout: 5 * time.Second, ConnContext: api.ConnContext}
	go func() { _ = srv.Serve(l) }()
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = os.Remove(a.cfg.Socket)
	}, nil
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

// serveMigrations serves the migration port: stdio streams of attached
// processes (to their sessions here) and incoming moves (to the mover).
func (a *Agent) serveMigrations(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go a.serveMigrationConn(conn)
	}
}

func (a *Agent) serveMigrationConn(conn net.Conn) {
	defer conn.Close()
	c := wire.NewConn(conn)
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var hdr wire.StreamHeader
	if err := c.Expect(wire.FrHeader, &hdr); err != nil {
		a.log.Debug("migration port: bad stream", "peer", transport.PeerName(conn), "err", err)
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	// Every stream is bound to the node its certificate names, never to
	// a node the header names: that node must be the one the agreed
	// state says the stream is for.
	from := transport.PeerName(conn)
	switch hdr.Kind {
	case wire.KindStdio:
		s := a.sessions.Get(hdr.CPID)
		if s == nil {
			return
		}
		// Only the node the process runs on holds its stdio: another
		// member would read its stdin and write its output.
		if !a.runsOn(hdr.CPID, from) {
			a.log.Warn("refusing a stdio stream", "cpid", hdr.CPID, "peer", from)
			return
		}
		s.ServeHolder(c)
	case wire.KindMove:
		// The mover takes it only from the source of the agreed move.
		a.mover.Receive(conn, c, hdr, from)
	default:
		a.log.Warn("migration port: unknown stream kind", "peer", from, "kind", hdr.Kind)
	}
}

// runsOn reports whether the agreed state places cpid on node now, past
// the read barrier, or says it ended there: a short command (ssi sh -c
// true) may end, and be forgotten, before its holder first reaches its
// session, and that holder still has its output and exit to give.
func (a *Agent) runsOn(cpid int, node string) bool {
	s, err := a.peer.Store()
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if p, ok := peer.FindProc(ctx, a.peer, s, cpid); ok {
		return p.Node == node
	}
	e, ended := s.Ended(cpid)
	return ended && e.Node == node
}
