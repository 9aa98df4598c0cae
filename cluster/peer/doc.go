// Package peer is this node as a member of the cluster and its calls to
// the other members: the store and identity it has once it joined, the
// one apply (here when this node leads, else forwarded to the leader),
// posts to peers over the cluster port's ProtoRPC (mutually
// authenticated TLS, so the handler knows which node asks), and the read
// barrier that makes every read of the agreed state reflect every write
// that returned before it.
//
// It does not import cluster (the root) or any package above it: it
// knows nothing of jobs, migrations, membership or telemetry, only the
// store, the transport and the api error table.
package peer
