package cluster

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"ssi/cluster/discovery"
	"ssi/cluster/transport"
)

// tlsDir is where the node's identity lives in its data directory.
func (a *Agent) tlsDir() string { return filepath.Join(a.cfg.DataDir, "tls") }

// obtainIdentity returns this node's identity: the one it has (a member
// coming back needs no token), one issued by a member that accepted our
// token (found by discovery or among the seeds), or a new cluster's. It
// reports whether it formed a new cluster.
func (a *Agent) obtainIdentity(ctx context.Context) (*transport.Identity, bool, error) {
	if transport.HasIdentity(a.tlsDir()) {
		id, err := transport.LoadIdentity(a.tlsDir())
		if err != nil {
			return nil, false, fmt.Errorf("identity in %s: %w", a.tlsDir(), err)
		}
		return id, false, nil
	}
	start := time.Now()
	ips := []net.IP{net.ParseIP(a.advertiseIP)}
	lastErr := map[string]string{} // a target's last error, logged when it changes
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		var targets []string
		targets = append(targets, a.cfg.Join...)
		act := actWait
		if a.table != nil {
			var found []string
			recent := time.Now().Add(-3 * a.cfg.DiscoveryInterval)
			act, found = decide(a.cfg.NodeName, a.table.Peers(recent), time.Since(start) >= a.cfg.DiscoveryWait)
			targets = append(targets, found...)
		} else if len(a.cfg.Join) == 0 {
			// No token or no discovery, and nobody to join: we are alone.
			act = actBootstrap
		}
		for _, t := range targets {
			id, _, err := transport.Join(ctx, t, a.cfg.JoinToken, a.cfg.NodeName, ips)
			if err == nil {
				if err := id.Save(a.tlsDir()); err != nil {
					return nil, false, err
				}
				a.log.Info("joined the cluster", "via", t)
				a.joinedVia = t
				return id, false, nil
			}
			// Retries come every 250 ms: say each new reason once.
			if lastErr[t] != err.Error() {
				a.log.Warn("join refused", "member", t, "err", err)
				lastErr[t] = err.Error()
			}
		}
		if act == actBootstrap && len(a.cfg.Join) == 0 {
			return a.formCluster(ips)
		}
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-tick.C:
		}
	}
}

// formCluster creates the cluster's CA and this node's identity.
func (a *Agent) formCluster(ips []net.IP) (*transport.Identity, bool, error) {
	ca, err := transport.NewCA(randomID())
	if err != nil {
		return nil, false, err
	}
	id, err := transport.NewIdentity(ca, a.cfg.NodeName, ips)
	if err != nil {
		return nil, false, err
	}
	if err := id.Save(a.tlsDir()); err != nil {
		return nil, false, err
	}
	a.log.Info("formed a new cluster", "cluster", clusterID(id))
	return id, true, nil
}

// beacon is what this agent announces while it runs.
func (a *Agent) beacon() discovery.Beacon {
	state := discovery.StateSeeking
	if a.isMember.Load() {
		state = discovery.StateMember
	}
	return discovery.Beacon{
		Tag: transport.TokenTag(a.cfg.JoinToken), Node: a.cfg.NodeName,
		Addr: a.advertise, State: state,
	}
}

// advertiseIP picks the address other nodes reach us at: the configured
// one, else the first non-loopback IPv4 address.
func advertiseIP(configured string) (string, error) {
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
