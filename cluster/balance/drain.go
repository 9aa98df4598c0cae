package balance

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"ssi/cluster/api"
	"ssi/fs"
	"ssi/raftstore"
)

// Drain blocks arrivals here (block) and moves every process running
// here, live, one by one, each to where the policy would run it best
// among the other nodes; a locked process or one that cannot move stays
// and says why. Nomad's and kubectl's drains restart the work
// elsewhere; this one keeps it running. The block stays until Undrain.
func (l *Loop) Drain(ctx context.Context) ([]api.DrainResult, error) {
	if err := l.SetBlock(ctx, true); err != nil {
		return nil, err
	}
	a, err := l.Agreed()
	if err != nil {
		return nil, err
	}
	var out []api.DrainResult
	for _, p := range a.Procs() {
		if p.Node != l.Node || p.State == raftstore.ProcExited {
			continue
		}
		res := api.DrainResult{CPID: p.CPID}
		if p.Lock {
			res.Err = "locked (write 0 to lock to let it move)"
			out = append(out, res)
			continue
		}
		nodes, _ := Snapshot(l.Node, a, l.Samples, time.Now())
		nodes = slices.DeleteFunc(nodes, func(n Node) bool { return n.Name == l.Node })
		to := Best(nodes, "", 1, l.Policy)
		switch {
		case to == "":
			res.Err = "no other node is up and takes arrivals"
		default:
			if err := l.Mover.Migrate(ctx, p.CPID, to, 0); err != nil {
				res.Err = err.Error()
			} else {
				res.To = to
			}
		}
		l.Log.Info("drain", "cpid", p.CPID, "to", res.To, "err", res.Err)
		l.journal.moved(api.BalanceRecord{At: time.Now(), Node: l.Node, CPID: p.CPID, UID: p.UID, Action: action(res),
			Kind: "drain", From: l.Node, To: res.To, Why: "the node is drained (ssi drain)", Err: res.Err})
		out = append(out, res)
	}
	return out, nil
}

func action(r api.DrainResult) string {
	if r.Err != "" {
		return "failed"
	}
	return "moved"
}

// HandleDrain is `ssi drain [--undo] NODE` (root only, by the route).
// A node's root drains only its own node, as it sets only its own
// switches: draining another would move that node's root processes.
func (l *Loop) HandleDrain(w http.ResponseWriter, r *http.Request) {
	var req api.DrainRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10)).Decode(&req); err != nil {
		api.WriteErrno(w, fmt.Errorf("%w: want {node, undo}", fs.ErrBadValue))
		return
	}
	if req.Node != l.Node {
		api.WriteErrno(w, fmt.Errorf("%w: this is %s; drain %s on %s itself (a node's root drains only its own node)",
			fs.ErrPermission, l.Node, req.Node, req.Node))
		return
	}
	if req.Undo {
		if err := l.SetBlock(r.Context(), false); err != nil {
			api.WriteErrno(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, []api.DrainResult{})
		return
	}
	out, err := l.Drain(context.WithoutCancel(r.Context()))
	if err != nil {
		api.WriteErrno(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, out)
}
