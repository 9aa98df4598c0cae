package membership

import (
	"context"
	"crypto/x509"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"ssi/cluster/transport"
)

// TrustConfig is what Trust needs to know of the agent.
type TrustConfig struct {
	// Node is this node's name.
	Node string
	// DataDir holds the node's identity (in tls/).
	DataDir string
	// CertLifetime is the life of the certificates this node issues as
	// leader, and the longest life this node's own certificate is
	// renewed on (transport.NodeValidity if zero).
	CertLifetime time.Duration
	// Drop closes this node's accepted connections whose peer
	// certificate matches and says how many (the Mux's Drop); nil
	// closes none.
	Drop func(match func(leaf *x509.Certificate) bool) int
	// Log receives the certificates' events; nil discards.
	Log *slog.Logger
}

// Trust keeps this member's certificates where the trust model wants
// them, while the agent runs:
//   - the CA key stays with the voters: a node that becomes one takes it
//     from a voter holding it (HandleCA), a node that is not one deletes
//     it (keepCA, cakey.go);
//   - the node certificate renews itself at two thirds of its life,
//     signed and recorded by the leader (HandleRenew, renew.go), and is
//     swapped into the live TLS configurations without a restart;
//   - every handshake refuses a certificate the agreed state revoked,
//     and connections of a certificate revoked, or of a node removed,
//     are closed as soon as this replica learns it (revoke.go).
type Trust struct {
	cfg TrustConfig
	c   Cluster
	id  *transport.Identity
	log *slog.Logger
	// now and after are the clock, replaced by tests.
	now   func() time.Time
	after func(time.Duration) <-chan time.Time

	// Touched by the keepCA loop only.
	caErr    string // the last failure to take the CA key, said once
	recorded string // the serial of our own certificate known recorded
}

// NewTrust returns the trust keeper of a member with identity id, and
// makes id's handshakes refuse what this replica holds revoked.
func NewTrust(cfg TrustConfig, c Cluster, id *transport.Identity) *Trust {
	if cfg.CertLifetime <= 0 {
		cfg.CertLifetime = transport.NodeValidity
	}
	t := &Trust{cfg: cfg, c: c, id: id, log: cfg.Log, now: time.Now, after: time.After}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	id.SetRefuse(t.refuse)
	return t
}

// Run keeps the CA key, renews the certificate and closes revoked
// connections until ctx ends.
func (t *Trust) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, loop := range []func(context.Context){t.keepCA, t.renewLoop, t.watchRevoked} {
		wg.Add(1)
		go func() { defer wg.Done(); loop(ctx) }()
	}
	wg.Wait()
}

// tlsDir is where the node's identity lives in its data directory.
func (t *Trust) tlsDir() string { return filepath.Join(t.cfg.DataDir, "tls") }
