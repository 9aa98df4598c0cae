package membership

import (
	"reflect"
	"testing"

	"ssi/cluster/discovery"
)

func seen(node, state string) discovery.Seen {
	return discovery.Seen{Beacon: discovery.Beacon{Node: node, State: state, Addr: node + ":7700"}}
}

func TestDecide(t *testing.T) {
	cases := []struct {
		name    string
		self    string
		peers   []discovery.Seen
		waited  bool
		act     action
		targets []string
	}{
		{"alone, still looking", "n1", nil, false, actWait, nil},
		{"alone, looked long enough", "n1", nil, true, actBootstrap, nil},
		{"a member exists", "n1", []discovery.Seen{seen("n2", discovery.StateMember)}, false, actJoin, []string{"n2:7700"}},
		{"smallest seeker forms", "n1", []discovery.Seen{seen("n2", discovery.StateSeeking), seen("n3", discovery.StateSeeking)}, true, actBootstrap, nil},
		{"others wait for it", "n2", []discovery.Seen{seen("n1", discovery.StateSeeking), seen("n3", discovery.StateSeeking)}, true, actWait, nil},
		{"members win over seekers", "n1", []discovery.Seen{seen("n0", discovery.StateSeeking), seen("n3", discovery.StateMember)}, true, actJoin, []string{"n3:7700"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			act, targets := decide(c.self, c.peers, c.waited)
			if act != c.act || !reflect.DeepEqual(targets, c.targets) {
				t.Fatalf("decide = %v %v, want %v %v", act, targets, c.act, c.targets)
			}
		})
	}
}
