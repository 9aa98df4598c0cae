// Package balance is the cluster's automatic placement: a pure policy
// (Plan, Best) over a snapshot of the nodes and of the processes one
// node runs, deciding which of them to move where so that the load
// spreads and no node runs out of memory, and the loop (Loop) that takes
// the snapshot from telemetry and the agreed state, carries the moves
// out and remembers its decisions for `ssi balance --explain`. The
// policy reads no store, no telemetry and no clock, so that it is
// table-tested as it is; DESIGN.md says why it decides as it does.
package balance
