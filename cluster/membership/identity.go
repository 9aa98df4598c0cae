package membership

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"ssi/cluster/transport"
)

// tlsDir is where the node's identity lives in its data directory.
func (m *Membership) tlsDir() string { return filepath.Join(m.cfg.DataDir, "tls") }

// ObtainIdentity returns this node's identity: the one it has (a member
// coming back needs no token), one issued by a member that accepted our
// token (found by discovery or among the seeds), or a new cluster's. It
// reports whether it formed a new cluster.
func (m *Membership) ObtainIdentity(ctx context.Context) (*transport.Identity, bool, error) {
	if transport.HasIdentity(m.tlsDir()) {
		id, err := transport.LoadIdentity(m.tlsDir())
		if err != nil {
			return nil, false, fmt.Errorf("identity in %s: %w", m.tlsDir(), err)
		}
		return id, false, nil
	}
	start := time.Now()
	host, _, _ := net.SplitHostPort(m.cfg.Advertise)
	ips := []net.IP{net.ParseIP(host)}
	// One key for every attempt: a member that spent our token's use on
	// an attempt whose reply was lost knows the retry by it.
	key, err := transport.NewKey()
	if err != nil {
		return nil, false, err
	}
	lastErr := map[string]string{} // a target's last error, logged when it changes
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		var targets []string
		targets = append(targets, m.cfg.Join...)
		act := actWait
		if m.table != nil {
			var found []string
			recent := time.Now().Add(-3 * m.cfg.DiscoveryInterval)
			act, found = decide(m.cfg.Node, m.table.Peers(recent), time.Since(start) >= m.cfg.DiscoveryWait)
			targets = append(targets, found...)
		} else if len(m.cfg.Join) == 0 {
			// No token or no discovery, and nobody to join: we are alone.
			act = actBootstrap
		}
		if id, err := m.join(ctx, targets, ips, key, lastErr); id != nil || err != nil {
			return id, false, err
		}
		if act == actBootstrap && len(m.cfg.Join) == 0 {
			return m.formCluster(ips)
		}
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-tick.C:
		}
	}
}

// join asks each target in turn to admit us and keeps the first
// identity one issues; nil, nil when every one refused. Retries come
// every 250 ms: lastErr lets each new reason be said once. A token that
// is expired, revoked or used up never admits again: that ends the
// attempts with its error.
func (m *Membership) join(ctx context.Context, targets []string, ips []net.IP, key *ecdsa.PrivateKey, lastErr map[string]string) (*transport.Identity, error) {
	for _, t := range targets {
		id, _, err := transport.JoinWithKey(ctx, t, m.cfg.JoinToken, m.cfg.Node, ips, key)
		if err == nil {
			if err := id.Save(m.tlsDir()); err != nil {
				return nil, err
			}
			m.log.Info("joined the cluster", "via", t)
			m.mu.Lock()
			m.joinedVia = t
			m.mu.Unlock()
			return id, nil
		}
		if lastErr[t] != err.Error() {
			m.log.Warn("join refused", "member", t, "err", err)
			lastErr[t] = err.Error()
		}
		if spentToken(err) {
			return nil, fmt.Errorf("%w: this node needs a new token (ssi token create, on a member)", err)
		}
	}
	return nil, nil
}

// spentToken reports whether err refuses a join for good: the token
// expired, was revoked or is used up.
func spentToken(err error) bool {
	return errors.Is(err, transport.ErrTokenExpired) || errors.Is(err, transport.ErrTokenRevoked) ||
		errors.Is(err, transport.ErrTokenUsedUp)
}

// formCluster creates the cluster's CA and this node's identity.
func (m *Membership) formCluster(ips []net.IP) (*transport.Identity, bool, error) {
	ca, err := transport.NewCA(transport.NewID())
	if err != nil {
		return nil, false, err
	}
	id, err := transport.NewIdentity(ca, m.cfg.Node, ips)
	if err != nil {
		return nil, false, err
	}
	if err := id.Save(m.tlsDir()); err != nil {
		return nil, false, err
	}
	m.log.Info("formed a new cluster", "cluster", id.ClusterID())
	return id, true, nil
}

// AdvertiseIP picks the address other nodes reach us at: the configured
// one, else the first non-loopback IPv4 address.
func AdvertiseIP(configured string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, ad := range addrs {
		if n, ok := ad.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String(), nil
		}
	}
	return "127.0.0.1", nil
}
