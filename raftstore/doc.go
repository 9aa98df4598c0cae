// Package raftstore holds the cluster's agreed state on hashicorp/raft:
// nodes and their admin switches, cluster processes, migrations in flight,
// the cpid counter and the hashes of join tokens. It is the only package
// that imports hashicorp/raft; no raft type crosses its API.
//
// # Durability
//
// Open keeps raft's log and stable store in a write-ahead log under wal/
// (hashicorp/raft-wal: append-only segment files, plus a small bolt file
// for its metadata) and snapshots under snapshots/ (the last two kept),
// all in Config.DataDir, which a lock file there keeps to one agent. A
// DataDir made before raft-wal keeps its bolt file, raft.db (raft-boltdb),
// as log and stable store. Raft's traffic runs over the caller's Layer (a
// listener plus a dialer). A node reopened on the same DataDir comes back
// with its state and rejoins its cluster; Config.Bootstrap only matters
// for a DataDir without state.
//
// # Writes and forwarding
//
// Every change is a Command (NodeUpsert, ProcAdd, MigrationStart, ...)
// committed through raft. Only the leader commits: Store.Apply on a
// follower returns a *NotLeaderError naming the leader. The caller then
// forwards the command itself: EncodeCommand on the follower, the bytes
// over the wire, Store.ApplyEncoded on the leader, the Result and
// ErrorCode(err) back, ErrorFromCode on the follower; and, for
// read-your-writes, WaitApplied(Result.Index) on the follower.
//
// A command that does not fit the state (an unknown node, a process
// already migrating) is still committed but changes nothing: Apply returns
// its error, wrapping ErrNotFound, ErrExists, ErrBusy or ErrInvalid.
//
// # Log format
//
// A log entry is one byte of CommandType, one byte of version and the
// command as JSON. Type numbers are append-only and never reused; every
// version ever written stays decodable (see CommandType and codec).
// Application is deterministic: times and chosen values travel inside
// commands. A committed entry this binary cannot decode stops the node
// with a panic rather than let it diverge; ApplyEncoded validates bytes
// first so garbage never reaches the log.
//
// # Reads
//
// Nodes, Procs, Migrations, TokenHashes and friends read this node's
// replica and return copies. They may lag the leader slightly; WaitApplied
// gives read-your-writes and ReadBarrier linearizable reads.
//
// # Testing
//
// Package raftstoretest opens a real one-node Store for other packages'
// unit tests.
package raftstore
