package balance

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	"ssi/cluster/api"
	"ssi/raftstore"
)

// ExplainPath is where a node answers with its own records (peer port).
const ExplainPath = "/v1/balance"

// Poster sends a request to another node's peer port (a *peer.Cluster).
type Poster interface {
	Post(ctx context.Context, addr, path string, body []byte, out any) error
}

// HandlePeer answers another node with this node's records.
func (l *Loop) HandlePeer(w http.ResponseWriter, _ *http.Request) {
	api.WriteJSON(w, http.StatusOK, l.Records())
}

// Explain gathers every up node's records (this one's directly), oldest
// first; a node that does not answer within a second is left out.
func (l *Loop) Explain(ctx context.Context, p Poster) []Record {
	out := l.Records()
	a, err := l.Agreed()
	if err != nil {
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range a.Nodes() {
		if n.Name == l.Node || n.State != raftstore.NodeUp || n.Addr == "" {
			continue
		}
		wg.Add(1)
		go func(addr string) {
			defer wg.Done()
			var rs []Record
			if p.Post(ctx, addr, ExplainPath, []byte("{}"), &rs) == nil {
				mu.Lock()
				out = append(out, rs...)
				mu.Unlock()
			}
		}(n.Addr)
	}
	wg.Wait()
	slices.SortStableFunc(out, func(a, b Record) int { return a.At.Compare(b.At) })
	return out
}

// HandleLocal is `ssi balance --explain`: every node's records that the
// caller may see (visible says, by the process's owner).
func (l *Loop) HandleLocal(p Poster, visible func(r *http.Request, uid int) bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rs := l.Explain(r.Context(), p)
		out := []Record{}
		for _, rec := range rs {
			if visible(r, rec.UID) {
				out = append(out, rec)
			}
		}
		api.WriteJSON(w, http.StatusOK, out)
	}
}
