package membership

import (
	"ssi/cluster/discovery"
)

// action is what an agent that is not yet a member does next.
type action int

const (
	actWait      action = iota // keep listening
	actJoin                    // join the members in targets
	actBootstrap               // form the cluster
)

// decide chooses, from the beacons of agents holding our token, between
// joining, forming the cluster and waiting. Members are joined at once.
// Otherwise, once this agent has looked for a cluster long enough, the
// seeker with the smallest name forms it and the others wait for its
// member beacon: agents started together form one cluster, not several.
// A seeker that vanishes ages out of the beacon table and the next
// smallest takes its place.
func decide(self string, peers []discovery.Seen, waited bool) (action, []string) {
	var members []string
	lowest := true
	for _, p := range peers {
		switch p.State {
		case discovery.StateMember:
			members = append(members, p.Addr)
		case discovery.StateSeeking:
			if p.Node < self {
				lowest = false
			}
		}
	}
	switch {
	case len(members) > 0:
		return actJoin, members
	case waited && lowest:
		return actBootstrap, nil
	}
	return actWait, nil
}
