package raftstore

// The read side is served from this node's replica, without a round trip
// to the leader: it may lag the leader by a few milliseconds. For
// read-your-writes, WaitApplied(Result.Index) first. Every method returns
// copies; callers may keep and change them.

// stateReader reads the cluster's agreed records (nodes, processes,
// migrations, join tokens, the cpid counter and the recent history)
// from this node's replica. It owns nothing: the fsm it reads is shared
// with the Store, and it never changes it.
type stateReader struct{ fsm *fsm }

// Nodes returns every node, sorted by name.
func (r stateReader) Nodes() []Node {
	var out []Node
	r.fsm.view(func(st *state) { out = st.nodeList() })
	return out
}

// Node returns the node called name.
func (r stateReader) Node(name string) (Node, bool) {
	var n Node
	var ok bool
	r.fsm.view(func(st *state) {
		var p *Node
		if p, ok = st.nodes[name]; ok {
			n = *p
		}
	})
	return n, ok
}

// Procs returns every cluster process, sorted by cpid.
func (r stateReader) Procs() []Proc {
	var out []Proc
	r.fsm.view(func(st *state) { out = st.procList() })
	return out
}

// Proc returns the process with the given cpid.
func (r stateReader) Proc(cpid int) (Proc, bool) {
	var p Proc
	var ok bool
	r.fsm.view(func(st *state) {
		var ptr *Proc
		if ptr, ok = st.procs[cpid]; ok {
			p = ptr.clone()
		}
	})
	return p, ok
}

// Migrations returns the migrations in flight, sorted by cpid.
func (r stateReader) Migrations() []Migration {
	var out []Migration
	r.fsm.view(func(st *state) { out = st.migrationList() })
	return out
}

// Migration returns the migration in flight of the process cpid.
func (r stateReader) Migration(cpid int) (Migration, bool) {
	var m Migration
	var ok bool
	r.fsm.view(func(st *state) {
		var ptr *Migration
		if ptr, ok = st.migrations[cpid]; ok {
			m = *ptr
		}
	})
	return m, ok
}

// TokenHashes returns the join tokens' hashes, sorted.
func (r stateReader) TokenHashes() []TokenHash {
	var out []TokenHash
	r.fsm.view(func(st *state) { out = st.tokenList() })
	return out
}

// HasToken reports whether hash (see HashToken) is a known join token's,
// valid or not (see Token for its status).
func (r stateReader) HasToken(hash string) bool {
	_, ok := r.Token(hash)
	return ok
}

// Token returns the join token whose hash (see HashToken) is hash.
func (r stateReader) Token(hash string) (TokenHash, bool) {
	var t TokenHash
	var ok bool
	r.fsm.view(func(st *state) { t, ok = st.tokens[hash] })
	return t, ok
}

// NextCPID returns the number the cpid counter hands out next.
func (r stateReader) NextCPID() int {
	var n int
	r.fsm.view(func(st *state) { n = st.nextCPID })
	return n
}
