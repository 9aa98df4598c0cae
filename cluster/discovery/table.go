package discovery

import (
	"encoding/json"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// Seen is a node's latest beacon: the address it came from, when it was
// last heard, and since when the node has announced that same state
// without falling silent.
type Seen struct {
	Beacon
	From  netip.Addr
	At    time.Time
	Since time.Time
}

// Bounds of the table against a flood of forged beacons.
const (
	// ForgetAfter is how many intervals a node may stay silent before
	// the table forgets it; heard again, it starts anew (Since).
	ForgetAfter = 5
	// maxPerSource bounds the names one source address announces at
	// once: an agent is one name, a few leave room for restarts.
	maxPerSource = 4
	// maxPeers bounds the table, and its memory of silent seekers.
	maxPeers = 512
)

// Table keeps the latest beacon of every node with our tag. It is safe
// for concurrent use.
type Table struct {
	tag  string
	self string

	mu       sync.Mutex // protects the fields below
	now      func() time.Time
	start    time.Time // when it began listening
	interval time.Duration
	wait     time.Duration
	peers    map[string]Seen
	sources  map[netip.Addr]int // names per source address
	// gone are the seekers forgotten while seeking, until heard again:
	// one that stops keeps its place among the seekers (Heard.Silent).
	gone map[string]Seen
}

// NewTable returns a table that keeps beacons with tag, ignoring self.
// It begins listening now.
func NewTable(tag, self string) *Table {
	return &Table{tag: tag, self: self, now: time.Now, start: time.Now(),
		peers: map[string]Seen{}, sources: map[netip.Addr]int{}, gone: map[string]Seen{}}
}

// UseClock makes the table read its time from now, and begin listening
// now (tests and simulations).
func (t *Table) UseClock(now func() time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.now, t.start = now, now()
}

// Pace records the pace of the beacons and how long agents look for a
// cluster before forming one (discovery.wait), for Heard. Run sets it.
func (t *Table) Pace(interval, wait time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.interval, t.wait = interval, wait
}

// clock is the table's time.
func (t *Table) clock() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.now()
}

// Observe decodes a datagram that came from address from and records it
// if it is a valid beacon of our cluster from another node. It reports
// whether it was kept: not when the table or from's share of it is full.
func (t *Table) Observe(data []byte, from netip.Addr, at time.Time) bool {
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
	defer t.mu.Unlock()
	old, known := t.peers[b.Node]
	if !known || old.From != from {
		if t.sources[from] >= maxPerSource || (!known && len(t.peers) >= maxPeers) {
			return false
		}
		if known {
			t.drop(b.Node)
		}
		t.sources[from]++
	}
	since := at
	// The same state, heard without a silence the table would have
	// forgotten: the same run.
	if known && old.State == b.State && (t.interval <= 0 || at.Sub(old.At) <= ForgetAfter*t.interval) {
		since = old.Since
	}
	delete(t.gone, b.Node)
	t.peers[b.Node] = Seen{Beacon: b, From: from, At: at, Since: since}
	return true
}

// drop forgets node; t.mu is held.
func (t *Table) drop(node string) {
	from := t.peers[node].From
	delete(t.peers, node)
	if t.sources[from]--; t.sources[from] <= 0 {
		delete(t.sources, from)
	}
}

// Prune forgets the nodes last heard before the given time: an agent
// that stopped, or a name someone announced for a while. Seekers among
// them are remembered as silent.
func (t *Table) Prune(before time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for node, s := range t.peers {
		if s.At.Before(before) {
			t.drop(node)
			if s.State == StateSeeking {
				t.remember(s)
			}
		}
	}
}

// remember keeps a forgotten seeker in gone; when full, it gives up the
// one first heard last: the earlier a seeker came, the longer its place
// matters. t.mu is held.
func (t *Table) remember(s Seen) {
	if len(t.gone) >= maxPeers {
		var last string
		for node, g := range t.gone {
			if last == "" || g.Since.After(t.gone[last].Since) {
				last = node
			}
		}
		if !s.Since.Before(t.gone[last].Since) {
			return
		}
		delete(t.gone, last)
	}
	t.gone[s.Node] = s
}

// Heard is what the table holds at one moment: the nodes heard lately,
// and what judging the seekers among them takes.
type Heard struct {
	Peers []Seen // sorted by node
	// Silent are the seekers heard before and not lately (stopped, or
	// forgotten), by node: a seeker that goes quiet keeps its place in
	// the bootstrap order, so that its going does not make every agent
	// above it form at once.
	Silent   []Seen
	Now      time.Time // the table's clock when read
	Start    time.Time // when the table began listening
	Interval time.Duration
	// Wait is how long agents look for a cluster before forming one; 0
	// if the table was not told (Pace).
	Wait time.Duration
}

// Peers returns the beacons heard since the given time, and the seekers
// silent since then.
func (t *Table) Peers(since time.Time) Heard {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := Heard{Now: t.now(), Start: t.start, Interval: t.interval, Wait: t.wait}
	for _, p := range t.peers {
		switch {
		case !p.At.Before(since):
			h.Peers = append(h.Peers, p)
		case p.State == StateSeeking:
			h.Silent = append(h.Silent, p)
		}
	}
	for _, g := range t.gone {
		h.Silent = append(h.Silent, g)
	}
	byNode := func(s []Seen) { sort.Slice(s, func(i, j int) bool { return s[i].Node < s[j].Node }) }
	byNode(h.Peers)
	byNode(h.Silent)
	return h
}
