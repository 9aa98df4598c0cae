package telemetry

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/transport"
)

// Path is where a node takes the others' samples (Table.Handle).
const Path = "/v1/telemetry"

// Table is the table of the latest sample of every node.
type Table struct {
	mu      sync.Mutex // protects samples
	samples map[string]Sample
}

// NewTable returns an empty table.
func NewTable() *Table { return &Table{samples: map[string]Sample{}} }

// Put records a sample, keeping the newer one if a late one arrives.
func (t *Table) Put(s Sample) {
	s.Seen = time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.samples[s.Node]; ok && old.At.After(s.At) {
		return
	}
	t.samples[s.Node] = s
}

// Get returns the latest sample of node.
func (t *Table) Get(node string) (Sample, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.samples[node]
	return s, ok
}

// Forget drops a node's samples.
func (t *Table) Forget(node string) {
	t.mu.Lock()
	delete(t.samples, node)
	t.mu.Unlock()
}

// Handle takes a sample another node pushed (POST Path on the peer
// port).
func (t *Table) Handle(w http.ResponseWriter, r *http.Request) {
	var s Sample
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&s); err != nil {
		api.WriteError(w, http.StatusBadRequest, err)
		return
	}
	// A node speaks only for itself: its certificate names it.
	if peer := transport.PeerName(api.ConnOf(r)); peer != "" && peer != s.Node {
		api.WriteError(w, http.StatusForbidden, fmt.Errorf("%s may not report for %s", peer, s.Node))
		return
	}
	t.Put(s)
	api.WriteJSON(w, http.StatusOK, struct{}{})
}
