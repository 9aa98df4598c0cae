package cluster

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"ssi/cluster/transport"
	"ssi/raftstore"
)

// localHandler serves commands of this node's users on the unix socket.
func (a *Agent) localHandler() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET /v1/health", a.handleHealth)
	m.HandleFunc("GET /v1/nodes", a.freshRead(a.handleNodes))
	m.HandleFunc("GET /v1/status", a.freshRead(a.handleStatus))
	m.HandleFunc("POST /v1/tokens", rootOnly(a.handleTokenCreate))
	m.HandleFunc("POST /v1/admin", rootOnly(a.handleAdmin))
	m.HandleFunc("POST /v1/run", a.handleRun)
	m.HandleFunc("POST /v1/migrate", a.handleLocalMigrate)
	m.HandleFunc("GET /v1/procs", a.freshRead(a.handleProcs))
	m.HandleFunc("POST /v1/kill", a.handleKill)
	m.HandleFunc("GET /v1/wait", a.handleWait)
	m.HandleFunc("GET /v1/migrations", a.freshRead(a.handleMoves))
	m.Handle("GET /metrics", a.metrics.handler())
	m.HandleFunc("POST /v1/debug/raftbench", rootOnly(a.handleRaftBench))
	m.HandleFunc("POST /v1/debug/barrier", rootOnly(a.handleBarrierSwitch))
	// Profiles, for measuring before optimising (root only).
	m.HandleFunc("GET /debug/pprof/", rootOnly(pprof.Index))
	m.HandleFunc("GET /debug/pprof/profile", rootOnly(pprof.Profile))
	return m
}

// rootOnly lets only root (by the socket peer's credentials) through: a
// join token admits a machine to the cluster, an admin switch moves
// everyone's processes.
func rootOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		uid, ok := peerUID(connOf(r))
		if !ok || uid != 0 {
			writeErr(w, http.StatusForbidden, errors.New("only root may do this (EPERM)"))
			return
		}
		h(w, r)
	}
}

// peerUID is the uid of the process at the other end of a unix socket.
func peerUID(c net.Conn) (uint32, bool) {
	uid, _, ok := peerCred(c)
	return uid, ok
}

// peerCred is the uid and gid of the process at the other end of a unix
// socket.
func peerCred(c net.Conn) (uid, gid uint32, ok bool) {
	uc, isUnix := c.(*net.UnixConn)
	if !isUnix {
		return 0, 0, false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, 0, false
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return 0, 0, false
	}
	return cred.Uid, cred.Gid, true
}

// Health is the answer of /v1/health.
type Health struct {
	Node   string `json:"node"`
	Status string `json:"status"` // "member", or "joining" before it is one
	Pid    int    `json:"pid"`
	Uptime string `json:"uptime"`
}

func (a *Agent) handleHealth(w http.ResponseWriter, _ *http.Request) {
	st := "joining"
	if a.isMember.Load() {
		st = "member"
	}
	writeJSON(w, http.StatusOK, Health{Node: a.cfg.NodeName, Status: st, Pid: os.Getpid(),
		Uptime: time.Since(a.start).Round(time.Second).String()})
}

// nodeInfos joins the agreed node list with Raft roles and telemetry.
func (a *Agent) nodeInfos(s *raftstore.Store) []NodeInfo {
	leader, _ := s.Leader()
	voters := map[string]bool{}
	servers, _ := s.Servers()
	for _, srv := range servers {
		voters[srv.ID] = srv.Voter
	}
	procs := map[string]int{}
	for _, p := range s.Procs() {
		procs[p.Node]++
	}
	var out []NodeInfo
	for _, n := range s.Nodes() {
		info := NodeInfo{Name: n.Name, Addr: n.Addr, State: string(n.State), Role: "follower",
			Voter: voters[n.Name], CPUs: n.CPUs, MemTotal: n.Memory, Procs: procs[n.Name],
			Admin: n.Admin.Map()}
		if n.Name == leader {
			info.Role = "leader"
		}
		if smp, ok := a.telemetry.Get(n.Name); ok {
			info.Load, info.CPUs, info.MemTotal, info.MemFree = smp.Load, smp.CPUs, smp.MemTotal, smp.MemFree
			seen := smp.Seen
			info.LastSeen = &seen
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (a *Agent) handleNodes(w http.ResponseWriter, _ *http.Request) {
	s, err := a.member()
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	writeJSON(w, http.StatusOK, a.nodeInfos(s))
}

func (a *Agent) handleStatus(w http.ResponseWriter, _ *http.Request) {
	s, err := a.member()
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	leader, _ := s.Leader()
	st := StatusInfo{Node: a.cfg.NodeName, ClusterID: clusterID(a.id), Leader: leader,
		Quorum: leader != "" && !a.stale.Load(), Procs: len(s.Procs()), AppliedIndex: s.AppliedIndex(),
		StaleReads: a.stale.Load()}
	for _, n := range s.Nodes() {
		st.NodesTotal++
		if n.State == raftstore.NodeUp {
			st.NodesUp++
		}
	}
	servers, _ := s.Servers()
	for _, srv := range servers {
		if srv.Voter {
			st.Voters++
		}
	}
	writeJSON(w, http.StatusOK, st)
}

func (a *Agent) handleTokenCreate(w http.ResponseWriter, r *http.Request) {
	tok, err := transport.NewToken()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	if _, err := a.apply(r.Context(), raftstore.TokenAdd{Hash: transport.TokenHash(tok), CreatedAt: time.Now()}); err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"token": tok})
}

func (a *Agent) handleAdmin(w http.ResponseWriter, r *http.Request) {
	var req AdminRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	if req.Node == "" {
		req.Node = a.cfg.NodeName
	}
	if _, err := a.apply(r.Context(), raftstore.AdminSet{Node: req.Node, Switch: req.Switch, Value: req.Value}); err != nil {
		writeErr(w, http.StatusConflict, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}
