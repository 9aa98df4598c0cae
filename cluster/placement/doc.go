// Package placement is the cluster's placement policy: pure functions
// over a snapshot of the nodes and processes, deciding where a process
// should run ("balance", today the least-loaded node) and which
// processes the admin switches send home (bring, expel). It reads no
// store, no telemetry and no clock: the caller takes the snapshot and
// carries the decisions out, so the policy is table-tested as it is.
// The balancer extends it.
package placement
