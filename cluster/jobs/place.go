package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"syscall"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/jobns"
	"ssi/cluster/stdio"
	"ssi/cluster/wire"
	"ssi/raftstore"
)

// Placement at start (ssi run --node N, --best, ssi sh). A process's
// home is the node where its user asked (the node that vouches for the
// uid); it may run elsewhere from its first instruction, with no CRIU
// dump and no move:
//
//  1. The home reads the caller as for a start here (callerOf: the
//     kernel's word on the uid, groups, limits, umask, oom_score_adj),
//     admits it (admit), picks the node (chooseNode: the one named, or
//     Config.Place) and lists the process there in the agreed state:
//     ProcAdd with Home here and Node there. peer.Authorize lets a node
//     list its own users' processes on any node.
//  2. It asks that node (StartPath, StartRequest). The chosen node
//     starts the process only if the agreed state lists it there, homed
//     on the node whose certificate the request came with, owned by the
//     uid the request names (HandleStart); it starts it as HandleRun
//     would here (gated, recorded, in its cgroup), with a holder for its
//     stdio feeding the session on the home, as after an arrival. From
//     then on the process is like any other that moved there.
//  3. The chosen node refused (blocked, not listed there, the command
//     cannot start), or the ask never reached it (its connection was
//     refused): the home forgets the listing (ProcRemove) and the caller
//     hears why. Nothing runs.
//  4. The ask's fate is unknown (the node went silent mid-request): the
//     home asks again, the same cpid, for askFor. The chosen node starts
//     a cpid at most once (Table.asked, then its job table) and answers a
//     repeat with the first start's outcome. Still unknown: the listing
//     stays, as for every process of a node that died, and the caller
//     is told so; that node's next agent forgets it (Adopt: listed here,
//     no record), or it runs there and is listed rightly.
//
// The home dying after listing, before the chosen node heard: the
// listing runs nowhere until the chosen node forgets it (SweepUnstarted,
// after sweepAfter; or its next agent, Adopt). The home dying after the
// start: the process runs on, listed, its output dropped once no session
// takes it (see package stdio), and is forgotten when it ends. The
// chosen node's agent restarting: Adopt spares the listings whose start
// is being asked (Table.asked); one listed just before the adoption and
// asked for just after is forgotten by it, and the start is refused.

// StartPath is the peer path where a node takes the starts that the
// homes of its processes ask of it.
const StartPath = "/v1/start"

// askFor bounds how long a home asks a chosen node whose answer does not
// come (a variable for the unit tests).
var askFor = 15 * time.Second

// StartRequest is a home's request that the chosen node start process
// CPID, which the agreed state lists there already: the caller as the
// home read it, and what the caller asked for.
type StartRequest struct {
	CPID   int            `json:"cpid"`
	Run    api.RunRequest `json:"run"`
	UID    uint32         `json:"uid"`
	GID    uint32         `json:"gid"`
	Caller jobns.Caller   `json:"caller"`
}

// homeSide is the home's part of placed starts: what it needs of its
// Table.
type homeSide struct {
	cfg      Config
	c        Cluster
	sessions *stdio.Sessions
	log      *slog.Logger
}

// homeOf is t's home side (a value: the Table keeps its methods few).
func homeOf(t *Table) homeSide {
	return homeSide{cfg: t.cfg, c: t.c, sessions: t.sessions, log: t.log}
}

// placed is a start HandleRun hands to another node.
type placed struct {
	req    api.RunRequest
	caller caller
	node   string
	// release ends the uid's admission: once the process is listed.
	release func()
}

// chooseNode turns a RunRequest's Node into the node to start on: this
// one, a named node that is up and takes processes, or the placement
// policy's choice.
func (t homeSide) chooseNode(target string) (string, error) {
	if target == "" || target == t.cfg.Node {
		return t.cfg.Node, nil
	}
	s, err := t.c.Store()
	if err != nil {
		return "", err
	}
	if target == "balance" {
		if t.cfg.Place == nil {
			return t.cfg.Node, nil
		}
		if target = t.cfg.Place(s, t.cfg.Node); target == "" {
			return "", &refusal{status: http.StatusServiceUnavailable, errno: "EHOSTUNREACH",
				msg: "no node is up and takes new processes"}
		}
		return target, nil
	}
	n, ok := s.Node(target)
	switch {
	case !ok:
		return "", &refusal{status: http.StatusBadRequest, errno: "EINVAL", msg: fmt.Sprintf("no node called %q", target)}
	case n.State != raftstore.NodeUp:
		return "", &refusal{status: http.StatusServiceUnavailable, errno: "EHOSTUNREACH",
			msg: fmt.Sprintf("%s is %s: nothing was started", target, n.State)}
	case n.Admin.Block:
		return "", &refusal{status: http.StatusServiceUnavailable, errno: "EHOSTUNREACH",
			msg: fmt.Sprintf("%s refuses new processes (block): nothing was started", target)}
	}
	return target, nil
}

// run lists p's process on p.node, asks that node to start it and,
// attached, relays the caller's stdio through a session here.
func (t homeSide) run(w http.ResponseWriter, r *http.Request, p placed) {
	raw, err := t.c.Apply(r.Context(), raftstore.ProcAdd{Home: t.cfg.Node, Node: p.node,
		UID: int(p.caller.uid), Argv: p.req.Argv, StartedAt: time.Now()})
	var res raftstore.Result
	if err == nil {
		err = json.Unmarshal(raw, &res)
	}
	p.release()
	if err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, fmt.Errorf("registering the process: %w", err))
		return
	}
	cpid := res.CPID
	sr := StartRequest{CPID: cpid, Run: p.req, UID: p.caller.uid, GID: p.caller.gid, Caller: p.caller.Caller}
	if !p.req.Attach {
		if err := t.askStart(r.Context(), p.node, sr); err != nil {
			answer(w, http.StatusServiceUnavailable, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, map[string]int{"cpid": cpid})
		return
	}
	conn, client, err := upgrade(w)
	if err != nil {
		// The caller left before it saw anything: nothing was asked.
		t.log.Warn("attached run: switching to the stdio stream", "cpid", cpid, "err", err)
		t.unlist(cpid)
		return
	}
	// The session exists before the chosen node's holder may call.
	s := openSession(t.sessions, cpid, client, p.req)
	if err := t.askStart(r.Context(), p.node, sr); err != nil {
		_ = client.Send(wire.FrError, []byte(err.Error()))
		conn.Close()
	}
	go s.FromClient(client)
	go func() {
		<-s.Done()
		conn.Close()
	}()
}

// askStart asks node to start sr's process. nil: it runs there. Else
// the listing is forgotten when the node surely did not start it, and
// kept (the error says so) when that cannot be known.
func (t homeSide) askStart(ctx context.Context, node string, sr StartRequest) error {
	body, _ := json.Marshal(sr)
	ctx, cancel := context.WithTimeout(ctx, askFor)
	defer cancel()
	// reached: an earlier ask may have reached the node, so a later one
	// that did not proves nothing.
	reached := false
	for {
		addr, err := t.c.NodeAddr(node)
		if err == nil {
			err = t.c.Post(ctx, addr, StartPath, body, nil)
		}
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, api.ErrRetry):
			t.unlist(sr.CPID)
			return fmt.Errorf("%s refused to start the process: %w", node, err)
		case !reached && neverSent(err):
			t.unlist(sr.CPID)
			return fmt.Errorf("%s cannot be reached, nothing was started: %w", node, err)
		case !neverSent(err):
			reached = true
		}
		select {
		case <-ctx.Done():
			t.log.Warn("a chosen node did not answer a start", "cpid", sr.CPID, "node", node, "err", err)
			return fmt.Errorf("%s did not answer whether it started process %d (%v): it stays listed there "+
				"until %s answers", node, sr.CPID, err, node)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// neverSent reports whether a failed ask never reached the node: its
// connection was refused or had no route.
func neverSent(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH)
}

// unlist forgets the listing of a process that was not started.
func (t homeSide) unlist(cpid int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := t.c.Apply(ctx, raftstore.ProcRemove{CPID: cpid, EndedAt: time.Now()}); err != nil &&
		!errors.Is(err, raftstore.ErrNotFound) {
		t.log.Warn("forgetting a process that did not start", "cpid", cpid, "err", err)
	}
}
