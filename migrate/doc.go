// Package migrate moves process trees: it checkpoints a tree with CRIU,
// carries the images as a stream, and restores the tree elsewhere.
//
// It speaks CRIU's RPC protocol (go-criu v7's rpc messages) to `criu swrk`,
// which it starts itself rather than through go-criu's Prepare: that lets it
// choose criu's environment (CRIU_FAULT=130 where hardware breakpoints do
// not fire), its working directory (never inside a FUSE mount served by the
// same process) and the extra files criu inherits (fresh stdio pipes that a
// restored tree adopts with inherit_fd). This is runc's approach.
//
// criu runs in the caller's namespaces: a tree is dumped by an agent in the
// node where it runs and restored by the agent of the node it moves to.
package migrate
