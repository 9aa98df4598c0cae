package view

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/user"
	"sort"
	"strconv"
	"strings"

	"ssi/cluster/api"
	"ssi/fs"
	"ssi/raftstore"
)

// nodeInfos joins the agreed node list with Raft roles and telemetry.
func (v *View) NodeInfos(s *raftstore.Store) []api.NodeInfo {
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
	var out []api.NodeInfo
	for _, n := range s.Nodes() {
		info := api.NodeInfo{Name: n.Name, Addr: n.Addr, State: string(n.State), Role: "follower",
			Voter: voters[n.Name], CPUs: n.CPUs, MemTotal: n.Memory, Procs: procs[n.Name],
			Admin: n.Admin.Map(), UsersDigest: n.UsersDigest, Speed: n.Speed}
		if n.Name == leader {
			info.Role = "leader"
		}
		if smp, ok := v.tel.Get(n.Name); ok {
			info.Load, info.CPUs, info.MemTotal, info.MemFree = smp.Load, smp.CPUs, smp.MemTotal, smp.MemFree
			seen := smp.Seen
			info.LastSeen = &seen
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// HandleNodes is `ssi nodes`.
func (v *View) HandleNodes(w http.ResponseWriter, _ *http.Request) {
	v.answer(w, func(s *raftstore.Store) any { return v.NodeInfos(s) })
}

// HandleStatus is `ssi status`.
func (v *View) HandleStatus(w http.ResponseWriter, _ *http.Request) {
	v.answer(w, func(s *raftstore.Store) any { return v.status(s) })
}

// status is the cluster's health in a few lines.
func (v *View) status(s *raftstore.Store) api.StatusInfo {
	leader, _ := s.Leader()
	st := api.StatusInfo{Node: v.node, ClusterID: v.c.Identity().ClusterID(), Leader: leader,
		Quorum: leader != "" && !v.c.Stale(), Procs: len(s.Procs()), AppliedIndex: s.AppliedIndex(),
		StaleReads: v.c.Stale()}
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
	return st
}

// answer answers what read finds in the agreed state, or 503 before
// this node is a member.
func (v *View) answer(w http.ResponseWriter, read func(*raftstore.Store) any) {
	s, err := v.c.Store()
	if err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, read(s))
}

// HandleAdmin sets an admin switch (root only, by the route).
func (v *View) HandleAdmin(w http.ResponseWriter, r *http.Request) {
	var req api.AdminRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		api.WriteError(w, http.StatusBadRequest, err)
		return
	}
	if req.Node == "" {
		req.Node = v.node
	}
	if req.Node != v.node {
		// The leader would apply it for itself; another node's switches
		// are set by its own root, as /apply insists (peer.Authorize).
		api.WriteErrno(w, fmt.Errorf("%w: %s sets only its own switches: set %s's there", fs.ErrPermission, v.node, req.Node))
		return
	}
	if _, err := v.c.Apply(r.Context(), raftstore.AdminSet{Node: req.Node, Switch: req.Switch, Value: req.Value}); err != nil {
		api.WriteError(w, http.StatusConflict, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, struct{}{})
}

// HandleProcs is `ssi ps`: the processes its caller may see.
func (v *View) HandleProcs(w http.ResponseWriter, r *http.Request) {
	uid := callerUID(r)
	v.answer(w, func(s *raftstore.Store) any { return v.ProcInfos(s, uid) })
}

// callerUID is the uid of the local socket's caller (SO_PEERCRED); one
// that cannot be told is nobody's, and sees only what everyone does.
func callerUID(r *http.Request) uint32 {
	if uid, _, ok := api.PeerCred(api.ConnOf(r)); ok {
		return uid
	}
	return ^uint32(0)
}

// ProcInfos joins the agreed processes that uid may see with their
// nodes' samples. Why a process cannot move comes from its node's sample
// (what it holds now) or else from the agreed state (why its last move
// failed, as every node knows the moment the mover does).
func (v *View) ProcInfos(s *raftstore.Store, uid uint32) []api.ProcInfo {
	out := []api.ProcInfo{}
	lastMove := map[int]raftstore.MoveRecord{}
	for _, m := range s.Moves() {
		lastMove[m.CPID] = m
	}
	for _, p := range s.Procs() {
		if !v.visible(uid, p.UID) {
			continue
		}
		pi := api.ProcInfo{CPID: p.CPID, Node: p.Node, Home: p.Home, UID: p.UID, User: userName(p.UID),
			State: string(p.State), NMigs: p.NMigs, Lock: p.Lock, Argv: p.Argv, Started: p.StartedAt}
		if smp, ok := v.tel.Get(p.Node); ok {
			if ps, ok := smp.Procs[p.CPID]; ok {
				pi.Pid, pi.CPU, pi.RSS, pi.CantMove = ps.Pid, ps.CPU, ps.RSS, ps.CantMove
			}
		}
		if m, ok := lastMove[p.CPID]; ok && pi.CantMove == "" && !m.Committed && m.Reason != "" {
			pi.CantMove = firstLineOf(m.Reason)
		}
		if p.State == raftstore.ProcMigrating {
			pi.CantMove = "a migration is under way"
		}
		out = append(out, pi)
	}
	return out
}

// HandleMoves is `ssi migrations`: with other users' processes hidden,
// the moves of the caller's own processes that still run (a move's
// record does not say whose process it moved).
func (v *View) HandleMoves(w http.ResponseWriter, r *http.Request) {
	uid := callerUID(r)
	v.answer(w, func(s *raftstore.Store) any { return v.moves(s, uid) })
}

func (v *View) moves(s *raftstore.Store, uid uint32) []raftstore.MoveRecord {
	all := s.Moves()
	if v.visible(uid, -1) {
		return all
	}
	out := []raftstore.MoveRecord{}
	for _, m := range all {
		if p, ok := s.Proc(m.CPID); ok && v.visible(uid, p.UID) {
			out = append(out, m)
		}
	}
	return out
}

// userName is uid's login name, or the number.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

// nogroup is the group of an owner the user database does not know: the
// kernel's overflow gid, as it shows an unmapped group.
const nogroup = 65534

// primaryGID is uid's primary group, the group of its processes' files.
func primaryGID(uid int) int {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return nogroup
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nogroup
	}
	return gid
}

// firstLineOf is s up to its first newline: cantmove is one line.
func firstLineOf(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
