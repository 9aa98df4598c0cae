package raftstore

// Changed returns a channel closed at the next change of the agreed
// state (any applied command, a snapshot restored): a wait for a
// condition on the state checks it, then blocks on this instead of
// polling.
func (s *Store) Changed() <-chan struct{} {
	_, ch := s.fsm.appliedIndex()
	return ch
}
