// Package peer is this node as a member of the cluster and its calls to
// the other members: the store and identity it has once it joined, the
// one apply (here when this node leads, else forwarded to the leader),
// posts to peers over the cluster port's ProtoRPC (mutually
// authenticated TLS, so the handler knows which node asks), and the read
// barrier that makes every read of the agreed state reflect every write
// that returned before it. It also holds the trust policy between
// members (authorize.go): a peer is the node its certificate names, the
// leader applies a forwarded command only if that node may send it
// (Authorize), and a uid a peer claims is bound to it (EffectiveUID).
//
// It does not import cluster (the root) or any package above it: it
// knows nothing of jobs, migrations, membership or telemetry, only the
// store, the transport, the api error table and fs's domain errors.
package peer
