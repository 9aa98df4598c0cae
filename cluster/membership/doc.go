// Package membership is how a node becomes and stays a member, and how
// the leader keeps the membership: the node's identity (the one it has,
// one issued by a member that took its join token, or a new cluster's),
// the discovery beacons that find members and decide who forms the
// cluster, registering with the leader, admitting newcomers on the join
// handshake, and the leader's duties (making registering nodes Raft
// servers, marking nodes up or down from their telemetry, removing nodes
// gone too long, keeping the voter count). Trust keeps the CA key with
// the voters, renews the node's certificate and closes the connections
// of revoked ones; Tokens serves `ssi token`.
//
// It reaches the cluster through the small Cluster interface (a
// *peer.Cluster in the agent) and reads liveness from the telemetry
// table. It does not import cluster (the root), jobs, migration or
// placement, and opens neither the store nor the cluster port: the agent
// does, with the identity ObtainIdentity returns.
package membership
