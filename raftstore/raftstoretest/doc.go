// Package raftstoretest starts a real raftstore.Store inside a test: one
// node, bootstrapped, its leader elected, its data in t.TempDir, raft over
// loopback TCP with timings tight enough for tests, closed by t.Cleanup.
// Unit tests of the packages above raftstore (the migration transaction,
// jobs) use it instead of a fake, so they run the real commands through
// the real state machine, as a normal user, without a lab. (After nomad's
// nomad/testing.go TestServer.)
//
// It only opens stores and applies raftstore's own commands through
// Store.Apply; it reaches into nothing raftstore keeps private, and is
// imported by tests only, never by the agent.
package raftstoretest
