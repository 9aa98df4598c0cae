// Package discovery lets agents on one LAN find each other: each agent
// multicasts a small beacon every interval and keeps a table of the
// beacons it hears. A beacon says who and where a node is and whether it
// is already a cluster member; it carries only a public tag derived from
// the join token, so agents with the same token recognise each other and
// a listener learns nothing secret. Trust comes later, from the join
// handshake and mutual TLS, never from a beacon.
//
// Anyone on the LAN can send beacons, so the table is bounded: a node not
// heard for ForgetAfter intervals is forgotten, one source address holds
// at most a few names, the whole table a few hundred. What a beacon
// claims decides nothing by itself: membership's bootstrap rule gives a
// seeker that never forms a bounded time (see membership/bootstrap.go).
package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Version is the beacon format. Beacons of other versions are ignored.
const Version = 1

// MaxBeacon bounds a beacon on the wire; larger datagrams are ignored.
const MaxBeacon = 1024

// States a beacon announces.
const (
	StateSeeking = "seeking" // not in a cluster yet
	StateMember  = "member"  // in a cluster; can admit newcomers
)

// Beacon is what a node announces.
type Beacon struct {
	V     int    `json:"v"`
	Tag   string `json:"tag"`   // public tag of the join token
	Node  string `json:"node"`  // node name
	Addr  string `json:"addr"`  // cluster port, host:port
	State string `json:"state"` // StateSeeking or StateMember
}

// Validate rejects beacons that are not well formed.
func (b Beacon) Validate() error {
	switch {
	case b.V != Version:
		return fmt.Errorf("beacon version %d", b.V)
	case b.Tag == "" || len(b.Tag) > 64:
		return errors.New("beacon tag")
	case b.Node == "" || len(b.Node) > 64:
		return errors.New("beacon node name")
	case b.State != StateSeeking && b.State != StateMember:
		return fmt.Errorf("beacon state %q", b.State)
	}
	if _, _, err := net.SplitHostPort(b.Addr); err != nil {
		return fmt.Errorf("beacon addr %q: %w", b.Addr, err)
	}
	return nil
}

// Config says where beacons go.
type Config struct {
	Group    string        // multicast group and port, e.g. "239.255.77.77:7701"
	Interval time.Duration // between beacons
	// Wait is how long agents look for a cluster before forming one
	// (discovery.wait), for the bootstrap rule (Heard.Wait).
	Wait time.Duration
}

// Run multicasts self() every interval and feeds what it hears into t,
// until ctx is done.
func Run(ctx context.Context, cfg Config, t *Table, self func() Beacon, log *slog.Logger) error {
	group, err := net.ResolveUDPAddr("udp4", cfg.Group)
	if err != nil || !group.IP.IsMulticast() {
		return fmt.Errorf("discovery group %q: not a multicast address", cfg.Group)
	}
	if cfg.Interval <= 0 {
		return fmt.Errorf("discovery interval %v", cfg.Interval)
	}
	in, err := net.ListenMulticastUDP("udp4", nil, group)
	if err != nil {
		return fmt.Errorf("discovery listen %s: %w", cfg.Group, err)
	}
	out, err := net.DialUDP("udp4", nil, group)
	if err != nil {
		in.Close()
		return fmt.Errorf("discovery send %s: %w", cfg.Group, err)
	}
	go func() {
		<-ctx.Done()
		in.Close()
		out.Close()
	}()
	t.Pace(cfg.Interval, cfg.Wait)
	go receive(in, t)
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for {
		t.Prune(t.clock().Add(-ForgetAfter * cfg.Interval))
		b := self()
		b.V = Version
		data, _ := json.Marshal(b)
		if _, err := out.Write(data); err != nil && ctx.Err() == nil {
			log.Debug("beacon not sent", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func receive(c *net.UDPConn, t *Table) {
	buf := make([]byte, MaxBeacon+1)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		t.Observe(buf[:n], from.Addr().Unmap(), t.clock())
	}
}
