package discovery

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func beacon(node, state string) []byte {
	b, _ := json.Marshal(Beacon{V: Version, Tag: "t1", Node: node, Addr: "10.0.0.1:7700", State: state})
	return b
}

var src = netip.MustParseAddr("10.0.0.1")

func TestTableKeepsOnlyValidBeaconsOfOurCluster(t *testing.T) {
	now := time.Unix(1000, 0)
	tab := NewTable("t1", "me")
	other, _ := json.Marshal(Beacon{V: Version, Tag: "t2", Node: "x", Addr: "10.0.0.9:7700", State: StateMember})
	future, _ := json.Marshal(Beacon{V: Version + 1, Tag: "t1", Node: "y", Addr: "10.0.0.9:7700", State: StateMember})
	noaddr, _ := json.Marshal(Beacon{V: Version, Tag: "t1", Node: "z", Addr: "nowhere", State: StateMember})
	cases := []struct {
		name string
		data []byte
		keep bool
	}{
		{"peer", beacon("n2", StateSeeking), true},
		{"member", beacon("n3", StateMember), true},
		{"ourselves", beacon("me", StateMember), false},
		{"other cluster", other, false},
		{"future version", future, false},
		{"bad addr", noaddr, false},
		{"bad state", beacon("n4", "boss"), false},
		{"garbage", []byte("\x00\x01garbage{"), false},
		{"huge", []byte(`{"v":1,"tag":"t1","node":"` + strings.Repeat("a", MaxBeacon) + `"}`), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := tab.Observe(c.data, src, now); got != c.keep {
				t.Fatalf("Observe = %v, want %v", got, c.keep)
			}
		})
	}
	peers := tab.Peers(now).Peers
	if len(peers) != 2 || peers[0].Node != "n2" || peers[1].Node != "n3" || peers[1].State != StateMember {
		t.Fatalf("peers %+v", peers)
	}
	// A newer beacon replaces the older one; old ones age out of Peers.
	tab.Observe(beacon("n2", StateMember), src, now.Add(5*time.Second))
	peers = tab.Peers(now.Add(time.Second)).Peers
	if len(peers) != 1 || peers[0].Node != "n2" || peers[0].State != StateMember {
		t.Fatalf("peers after update %+v", peers)
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	tab := NewTable("t", "me")
	self := func() Beacon { return Beacon{} }
	if err := Run(t.Context(), Config{Group: "10.1.2.3:7701", Interval: time.Second}, tab, self, nil); err == nil {
		t.Error("a unicast group was accepted")
	}
	if err := Run(t.Context(), Config{Group: "239.255.77.77:7701"}, tab, self, nil); err == nil {
		t.Error("a zero interval was accepted")
	}
}

// fakeClock is a table's time, moved by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newTable(c *fakeClock, self string) *Table {
	t := NewTable("t1", self)
	t.UseClock(c.now)
	return t
}

// A node whose beacons stop is forgotten after ForgetAfter intervals, and
// one heard again starts anew; one that keeps beaconing keeps its Since.
func TestTableForgetsSilentPeers(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	tab := newTable(clock, "me")
	tab.Pace(time.Second, 3*time.Second)
	first := clock.now()
	for i := 0; i < 10; i++ {
		tab.Observe(beacon("alive", StateSeeking), src, clock.now())
		if i < 2 {
			tab.Observe(beacon("gone", StateSeeking), netip.MustParseAddr("10.0.0.2"), clock.now())
		}
		tab.Prune(clock.now().Add(-ForgetAfter * time.Second))
		clock.advance(time.Second)
	}
	h := tab.Peers(time.Time{})
	if len(h.Peers) != 1 || h.Peers[0].Node != "alive" || !h.Peers[0].Since.Equal(first) {
		t.Fatalf("after 10 intervals: %+v", h.Peers)
	}
	if !h.Now.Equal(clock.now()) || !h.Start.Equal(first) || h.Interval != time.Second || h.Wait != 3*time.Second {
		t.Fatalf("heard %+v", h)
	}
	// Back after a silence: a new run.
	tab.Observe(beacon("gone", StateSeeking), netip.MustParseAddr("10.0.0.2"), clock.now())
	if p := tab.Peers(time.Time{}).Peers; len(p) != 2 || p[1].Node != "gone" || !p[1].Since.Equal(clock.now()) {
		t.Fatalf("back: %+v", p)
	}
	// A change of state starts a new run too.
	clock.advance(time.Second)
	tab.Observe(beacon("alive", StateMember), src, clock.now())
	if p := tab.Peers(clock.now()).Peers; len(p) != 1 || p[0].State != StateMember || !p[0].Since.Equal(clock.now()) {
		t.Fatalf("now a member: %+v", p)
	}
}

// One source address cannot fill the table with names, and the table
// has a bound.
func TestTableBounds(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	tab := newTable(clock, "me")
	kept := 0
	for i := 0; i < 100; i++ {
		if tab.Observe(beacon(fmt.Sprintf("forged%03d", i), StateSeeking), src, clock.now()) {
			kept++
		}
	}
	if kept != maxPerSource {
		t.Fatalf("one source kept %d names, want %d", kept, maxPerSource)
	}
	// Its names, heard again, still update; another address is heard.
	if !tab.Observe(beacon("forged000", StateMember), src, clock.now()) ||
		!tab.Observe(beacon("n2", StateSeeking), netip.MustParseAddr("10.0.0.2"), clock.now()) {
		t.Fatal("a known name or another source refused")
	}
	// Forgotten names free their source's share.
	clock.advance(time.Minute)
	tab.Prune(clock.now())
	if !tab.Observe(beacon("forged099", StateSeeking), src, clock.now()) {
		t.Fatal("the source's share was not freed")
	}
	for i := 0; i < 2*maxPeers; i++ {
		a := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		tab.Observe(beacon(fmt.Sprintf("x%04d", i), StateSeeking), a, clock.now())
	}
	if n := len(tab.Peers(time.Time{}).Peers); n != maxPeers {
		t.Fatalf("table holds %d, want %d", n, maxPeers)
	}
}
