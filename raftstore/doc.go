// Package raftstore holds the cluster's agreed state on hashicorp/raft:
// nodes and their admin switches, cluster processes, migrations in flight
// and the shared home. It is the only package that imports hashicorp/raft.
// It is filled in by the cluster-state issue.
package raftstore
