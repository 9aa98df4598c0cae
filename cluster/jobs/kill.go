package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/peer"
	"ssi/fs"
	"ssi/raftstore"
)

// migrateTimeout bounds one migration's stream and restore (as the
// migration package's does): a signal waits that long for the move of
// its process to end.
const migrateTimeout = 10 * time.Minute

// busyRetry is how soon a signal is tried again when the node it was
// forwarded to no longer has the process: that node's view is not ours
// to watch.
const busyRetry = 50 * time.Millisecond

// HandleKill is `ssi kill`, as the calling user.
func (t *Table) HandleKill(w http.ResponseWriter, r *http.Request) {
	uid, _, ok := api.PeerCred(api.ConnOf(r))
	var req api.KillRequest
	if !ok || json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req) != nil {
		api.WriteErrno(w, fmt.Errorf("%w: want {cpid, signal}", fs.ErrBadValue))
		return
	}
	req.UID = int(uid)
	t.answerKill(w, r, req)
}

// HandlePeerKill signals a process running here for another node.
func (t *Table) HandlePeerKill(w http.ResponseWriter, r *http.Request) {
	var req api.KillRequest
	if json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req) != nil {
		api.WriteErrno(w, fmt.Errorf("%w: want {cpid, signal}", fs.ErrBadValue))
		return
	}
	// The uid is the sending node's word for its user: bound to what
	// that node may vouch for (root only on its own processes).
	s, err := t.c.Store()
	if err != nil {
		api.WriteErrno(w, api.Domain(err))
		return
	}
	req.UID = peer.ClaimedUID(r, t.c, s, req.CPID, req.UID)
	t.answerKill(w, r, req)
}

func (t *Table) answerKill(w http.ResponseWriter, r *http.Request, req api.KillRequest) {
	if err := t.kill(r.Context(), req); err != nil {
		api.WriteErrno(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, struct{}{})
}

// kill delivers a signal where the process runs: to its init, which
// passes it to the job's leader, or with All to every process of the job.
func (t *Table) kill(ctx context.Context, req api.KillRequest) error {
	if req.Signal <= 0 || req.Signal > 64 {
		return fmt.Errorf("%w: signal %d", fs.ErrBadValue, req.Signal)
	}
	s, err := t.c.Store()
	if err != nil {
		return api.Domain(err)
	}
	if err := t.WaitAdoption(ctx); err != nil {
		return fmt.Errorf("%w: %v", fs.ErrBusy, err)
	}
	// A process in the middle of a move is signalled once it has landed:
	// each round reads where it is past the read barrier, so a move that
	// returned anywhere before is seen. A round waits for the next change
	// of the agreed state or of the jobs here, taken before it reads.
	deadline := time.Now().Add(migrateTimeout)
	for {
		agreed, local := s.Changed(), t.changed.next()
		var retry <-chan time.Time
		p, ok := peer.FindProc(ctx, t.c, s, req.CPID)
		if !ok {
			return fs.ErrNoProcess
		}
		if req.UID != 0 && req.UID != p.UID {
			return fmt.Errorf("%w: process %d belongs to uid %d", fs.ErrPermission, p.CPID, p.UID)
		}
		if p.State != raftstore.ProcMigrating {
			switch {
			case p.Node != t.cfg.Node && req.Forwarded:
				return fmt.Errorf("%w: process %d is not on %s any more", fs.ErrBusy, p.CPID, t.cfg.Node)
			case p.Node != t.cfg.Node:
				err := killThere(ctx, t.c, p.Node, req)
				if !errors.Is(err, fs.ErrBusy) {
					return err
				}
				retry = time.After(busyRetry)
			default:
				// Here by the agreed state; a stopped copy left by a move
				// away (gone) or a frozen one (moving) must not take it.
				if j, ok := t.Get(req.CPID); ok && j.Live() {
					return j.signal(syscall.Signal(req.Signal), req.All)
				}
			}
		}
		left := time.Until(deadline)
		if left < 0 {
			return fmt.Errorf("%w: process %d is migrating", fs.ErrBusy, req.CPID)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-agreed:
		case <-local:
		case <-retry:
		case <-time.After(left):
		}
	}
}

// killThere asks the node the process runs on to signal it.
func killThere(ctx context.Context, c Cluster, node string, req api.KillRequest) error {
	addr, err := c.NodeAddr(node)
	if err != nil {
		return fmt.Errorf("%w: %v", fs.ErrNodeDown, err)
	}
	req.Forwarded = true
	body, _ := json.Marshal(req)
	err = c.Post(ctx, addr, "/v1/kill", body, nil)
	if err != nil && errors.Is(err, api.ErrRetry) {
		return fmt.Errorf("%w: %v", fs.ErrNodeDown, err)
	}
	return err
}

// HandleWait answers once the process has ended.
func (t *Table) HandleWait(w http.ResponseWriter, r *http.Request) {
	cpid, err := strconv.Atoi(r.URL.Query().Get("cpid"))
	if err != nil {
		api.WriteErrno(w, fmt.Errorf("%w: cpid %q", fs.ErrBadValue, r.URL.Query().Get("cpid")))
		return
	}
	s, err := t.c.Store()
	if err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	if _, ok := peer.FindProc(r.Context(), t.c, s, cpid); !ok {
		if e, ok := s.Ended(cpid); ok {
			api.WriteJSON(w, http.StatusOK, api.WaitResult{Code: e.ExitCode})
			return
		}
		api.WriteErrno(w, fmt.Errorf("%w: %d", fs.ErrNoProcess, cpid))
		return
	}
	for {
		changed := s.Changed()
		if _, ok := s.Proc(cpid); !ok {
			e, _ := s.Ended(cpid)
			api.WriteJSON(w, http.StatusOK, api.WaitResult{Code: e.ExitCode})
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-changed:
		}
	}
}
