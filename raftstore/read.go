package raftstore

// The read side is served from this node's replica, without a round trip
// to the leader: it may lag the leader by a few milliseconds. For
// read-your-writes, WaitApplied(Result.Index) first. Every method returns
// copies; callers may keep and change them.

// Nodes returns every node, sorted by name.
func (s *Store) Nodes() []Node {
	var out []Node
	s.fsm.view(func(st *state) { out = st.nodeList() })
	return out
}

// Node returns the node called name.
func (s *Store) Node(name string) (Node, bool) {
	var n Node
	var ok bool
	s.fsm.view(func(st *state) {
		var p *Node
		if p, ok = st.nodes[name]; ok {
			n = *p
		}
	})
	return n, ok
}

// Procs returns every cluster process, sorted by cpid.
func (s *Store) Procs() []Proc {
	var out []Proc
	s.fsm.view(func(st *state) { out = st.procList() })
	return out
}

// Proc returns the process with the given cpid.
func (s *Store) Proc(cpid int) (Proc, bool) {
	var p Proc
	var ok bool
	s.fsm.view(func(st *state) {
		var ptr *Proc
		if ptr, ok = st.procs[cpid]; ok {
			p = ptr.clone()
		}
	})
	return p, ok
}

// Migrations returns the migrations in flight, sorted by cpid.
func (s *Store) Migrations() []Migration {
	var out []Migration
	s.fsm.view(func(st *state) { out = st.migrationList() })
	return out
}

// Migration returns the migration in flight of the process cpid.
func (s *Store) Migration(cpid int) (Migration, bool) {
	var m Migration
	var ok bool
	s.fsm.view(func(st *state) {
		var ptr *Migration
		if ptr, ok = st.migrations[cpid]; ok {
			m = *ptr
		}
	})
	return m, ok
}

// TokenHashes returns the join tokens' hashes, sorted.
func (s *Store) TokenHashes() []TokenHash {
	var out []TokenHash
	s.fsm.view(func(st *state) { out = st.tokenList() })
	return out
}

// HasToken reports whether hash (see HashToken) is a valid join token's.
func (s *Store) HasToken(hash string) bool {
	var ok bool
	s.fsm.view(func(st *state) { _, ok = st.tokens[hash] })
	return ok
}

// NextCPID returns the number the cpid counter hands out next.
func (s *Store) NextCPID() int {
	var n int
	s.fsm.view(func(st *state) { n = st.nextCPID })
	return n
}
