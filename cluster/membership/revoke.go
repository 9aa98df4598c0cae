package membership

import (
	"context"
	"crypto/x509"
	"slices"

	"ssi/cluster/transport"
	"ssi/raftstore"
)

// refuse is the identity's handshake check (transport.RefuseFunc): a
// certificate this replica holds revoked is refused, on both sides of
// every handshake. Before the store opens nothing is revoked.
func (t *Trust) refuse(leaf *x509.Certificate) error {
	s, err := t.c.Store()
	if err != nil {
		return nil
	}
	if s.CertRevoked(transport.Serial(leaf)) {
		return transport.ErrRevoked
	}
	return nil
}

// refused is what this replica refuses: revoked serials, and the nodes
// that are members (a node gone from them was removed).
type refused struct {
	revoked map[string]bool
	nodes   map[string]bool
}

func readRefused(s *raftstore.Store) refused {
	r := refused{revoked: map[string]bool{}, nodes: map[string]bool{}}
	for _, c := range s.Certs() {
		if c.Revoked {
			r.revoked[c.Serial] = true
		}
	}
	for _, n := range s.Nodes() {
		r.nodes[n.Name] = true
	}
	return r
}

// watchRevoked closes live connections as soon as this replica learns
// that their certificate was revoked or their node removed: a handshake
// refuses them from then on, but a connection made before would go on.
// Removal revokes the node's recorded certificates; its name covers a
// connection made with one the state no longer records (expired).
func (t *Trust) watchRevoked(ctx context.Context) {
	s, err := t.c.Store()
	if err != nil {
		return
	}
	seen := readRefused(s)
	for {
		changed := s.Changed()
		now := readRefused(s)
		var serials, gone []string
		for serial := range now.revoked {
			if !seen.revoked[serial] {
				serials = append(serials, serial)
			}
		}
		for name := range seen.nodes {
			if !now.nodes[name] {
				gone = append(gone, name)
			}
		}
		if len(serials) > 0 || len(gone) > 0 {
			t.dropRefused(s, serials, gone)
		}
		seen = now
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// dropRefused closes the connections of newly revoked serials and of
// nodes newly removed.
func (t *Trust) dropRefused(s *raftstore.Store, serials, gone []string) {
	if slices.Contains(serials, transport.Serial(t.id.Leaf())) {
		t.log.Error("this node's certificate was revoked: other nodes refuse it (was it removed from the cluster?)")
	}
	if t.cfg.Drop == nil {
		return
	}
	removed := map[string]bool{}
	for _, name := range gone {
		removed[name] = true
	}
	n := t.cfg.Drop(func(leaf *x509.Certificate) bool {
		return removed[leaf.Subject.CommonName] || s.CertRevoked(transport.Serial(leaf))
	})
	slices.Sort(serials)
	slices.Sort(gone)
	t.log.Info("closed the connections of revoked certificates", "closed", n, "serials", serials, "removed_nodes", gone)
}
