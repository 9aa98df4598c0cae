// Package cluster is the ssi agent: membership, the cluster's agreed state
// and telemetry, the job supervisor and the migration coordinator.
//
// For now the agent serves only what the lab needs to see it alive: a
// health endpoint on its local unix socket and an answer on its cluster
// port. Membership over Raft comes with the cluster-state issue.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Config is the agent's part of the configuration.
type Config struct {
	NodeName      string
	BindAddr      string
	AdvertiseAddr string
	Port          int
	DataDir       string
	Socket        string
}

// Agent is one node's daemon.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	start time.Time
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
	return &Agent{cfg: cfg, log: log}, nil
}

// Health is the answer of /v1/health.
type Health struct {
	Node   string `json:"node"`
	Status string `json:"status"`
	Pid    int    `json:"pid"`
	Uptime string `json:"uptime"`
}

// Run serves until ctx is done, then closes its listeners and removes its
// socket.
func (a *Agent) Run(ctx context.Context) error {
	a.start = time.Now()
	if err := os.MkdirAll(a.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	unixL, err := listenUnix(a.cfg.Socket)
	if err != nil {
		return err
	}
	tcpL, err := net.Listen("tcp", net.JoinHostPort(a.cfg.BindAddr, strconv.Itoa(a.cfg.Port)))
	if err != nil {
		unixL.Close()
		return fmt.Errorf("cluster port: %w", err)
	}
	a.log.Info("agent up", "node", a.cfg.NodeName, "port", tcpL.Addr().String(), "socket", a.cfg.Socket)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", a.handleHealth)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = srv.Serve(unixL) }()
	go func() { defer wg.Done(); a.servePeers(tcpL) }()

	<-ctx.Done()
	a.log.Info("agent stopping", "node", a.cfg.NodeName)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	tcpL.Close()
	wg.Wait()
	_ = os.Remove(a.cfg.Socket)
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

func (a *Agent) handleHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(Health{
		Node: a.cfg.NodeName, Status: "ok", Pid: os.Getpid(),
		Uptime: time.Since(a.start).Round(time.Second).String(),
	})
}

// servePeers answers each connection on the cluster port with the node's
// name and closes it: enough for the lab to prove node-to-node TCP until
// the authenticated transport replaces it.
func (a *Agent) servePeers(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				a.log.Warn("cluster port accept", "err", err)
			}
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "ssi agent %s\n", a.cfg.NodeName)
		}()
	}
}
