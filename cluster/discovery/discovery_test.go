package discovery

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func beacon(node, state string) []byte {
	b, _ := json.Marshal(Beacon{V: Version, Tag: "t1", Node: node, Addr: "10.0.0.1:7700", State: state})
	return b
}

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
			if got := tab.Observe(c.data, now); got != c.keep {
				t.Fatalf("Observe = %v, want %v", got, c.keep)
			}
		})
	}
	peers := tab.Peers(now)
	if len(peers) != 2 || peers[0].Node != "n2" || peers[1].Node != "n3" || peers[1].State != StateMember {
		t.Fatalf("peers %+v", peers)
	}
	// A newer beacon replaces the older one; old ones age out of Peers.
	tab.Observe(beacon("n2", StateMember), now.Add(5*time.Second))
	peers = tab.Peers(now.Add(time.Second))
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
