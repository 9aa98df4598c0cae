// Package migration is the migration transaction: moving a running
// process tree from this node to another so that it runs on exactly one
// of them, or on none and is reported lost, never on two. It owns the
// request (resolving "home" and "balance", asking the node the process
// runs on), the source's side (offer, dump, hand-over, verdict), the
// destination's side (admit, take the images, restore, await the
// verdict, land), settling moves whose outcome was not learnt (also for
// an agent that restarted: Resolve), the page relay and the moves'
// metrics. DESIGN.md states its invariants and its state machine.
//
// It reaches the rest of the agent only through the interfaces in
// deps.go: a Checkpointer (CRIU), a Host (what a process tree holds), a
// Cluster (the agreed state and the other nodes) and this node's Jobs.
// It does not import the root package cluster, jobs or membership, and
// of peer only its helpers (Retry, FindProc); it never serves HTTP
// routes of its own choosing (the root routes to its handlers) and
// never reads the environment.
package migration
