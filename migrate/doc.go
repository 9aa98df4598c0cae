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
//
// CRIU restores as root. So that it never opens, on a user's behalf, what
// the user could not, a job's dump names every regular file the frozen
// tree holds outside its own mounts as an external file (FileRef.Key),
// and a checked restore (RestoreOptions.Files, FileCheck) opens each one
// itself, with the owner's rights and without following links, and hands
// it to CRIU; what CRIU still opens by path is checked the same way first
// and audited after (see cluster/migration/DESIGN.md, "Files").
package migrate
