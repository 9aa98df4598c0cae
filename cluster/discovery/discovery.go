// Package discovery lets agents on one LAN find each other: each agent
// multicasts a small beacon every interval and keeps a table of the
// beacons it hears. A beacon says who and where a node is and whether it
// is already a cluster member; it carries only a public tag derived from
// the join token, so agents with the same token recognise each other and
// a listener learns nothing secret. Trust comes later, from the join
// handshake and mutual TLS, never from a beacon.
package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
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

// Seen is a beacon and when it was last heard.
type Seen struct {
	Beacon
	At time.Time
}

// Table keeps the latest beacon of every node with our tag. It is safe
// for concurrent use.
type Table struct {
	tag  string
	self string

	mu    sync.Mutex // protects peers
	peers map[string]Seen
}

// NewTable returns a table that keeps beacons with tag, ignoring self.
func NewTable(tag, self string) *Table {
	return &Table{tag: tag, self: self, peers: map[string]Seen{}}
}

// Observe decodes a datagram and records it if it is a valid beacon of
// our cluster from another node. It reports whether it was kept.
func (t *Table) Observe(data []byte, at time.Time) bool {
	if len(data) > MaxBeacon {
		return false
	}
	var b Beacon
	if err := json.Unmarshal(data, &b); err != nil || b.Validate() != nil {
		return false
	}
	if b.Tag != t.tag || b.Node == t.self {
		return false
	}
	t.mu.Lock()
	t.peers[b.Node] = Seen{Beacon: b, At: at}
	t.mu.Unlock()
	return true
}

// Peers returns the beacons heard since the given time, sorted by node.
func (t *Table) Peers(since time.Time) []Seen {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Seen
	for _, s := range t.peers {
		if !s.At.Before(since) {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// Config says where beacons go.
type Config struct {
	Group    string        // multicast group and port, e.g. "239.255.77.77:7701"
	Interval time.Duration // between beacons
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
	go receive(in, t)
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for {
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
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			return
		}
		t.Observe(buf[:n], time.Now())
	}
}
