// Package telemetry measures this node's load, pushes it to every other
// member every interval and keeps the table of every node's latest
// sample, from which `ssi nodes`, placement and the leader's liveness
// checks read. Samples travel between agents directly, never through the
// Raft log: they change every second and losing one is harmless.
//
// It does not import cluster (the root), jobs, migration or membership:
// what it needs of them comes in as small interfaces and functions (the
// processes' sampler, the peers to push to).
package telemetry
