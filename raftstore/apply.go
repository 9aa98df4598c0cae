package raftstore

import (
	"context"
	"fmt"
)

// Result is what a committed command produced.
type Result struct {
	// Index is the command's raft log index. A node that must see the
	// command's effect in its own replica waits for it with WaitApplied.
	Index uint64 `json:"index"`
	// CPID is the cpid ProcAdd assigned; zero for other commands.
	CPID int `json:"cpid,omitempty"`
	// Ino is the inode number HomeCreate assigned; zero for other
	// commands.
	Ino uint64 `json:"ino,omitempty"`
}

// Apply commits cmd through raft and applies it; only the leader can. On
// a follower it returns a *NotLeaderError (errors.Is ErrNotLeader) naming
// the leader: encode the command with EncodeCommand, send the bytes to
// the leader and have it call ApplyEncoded.
//
// A state error (ErrNotFound, ErrExists, ErrBusy, ErrInvalid) means the
// command was committed, at Result.Index, but changed nothing. If ctx
// ends first the outcome is unknown: the command may still commit.
func (s *Store) Apply(ctx context.Context, cmd Command) (Result, error) {
	b, err := EncodeCommand(cmd)
	if err != nil {
		return Result{}, err
	}
	return s.apply(ctx, b)
}

// ApplyEncoded is Apply for bytes made by EncodeCommand, typically on
// another node that forwarded them here. The bytes are decoded first and
// refused with ErrBadCommand if this binary does not know their type or
// version or cannot decode the body: garbage never enters the log, where
// it would stop every node that applies it.
func (s *Store) ApplyEncoded(ctx context.Context, b []byte) (Result, error) {
	if _, err := DecodeCommand(b); err != nil {
		return Result{}, err
	}
	// raft keeps the slice in its log; the caller may reuse its buffer.
	return s.apply(ctx, append([]byte(nil), b...))
}

func (s *Store) apply(ctx context.Context, b []byte) (Result, error) {
	if err := s.leaderOnly(ctx); err != nil {
		return Result{}, err
	}
	f := s.raft.Apply(b, enqueueTimeout(ctx))
	if err := s.wait(ctx, f); err != nil {
		return Result{}, fmt.Errorf("apply %v: %w", CommandType(b[0]), err)
	}
	res, ok := f.Response().(applyResult)
	if !ok {
		return Result{}, fmt.Errorf("apply %v: unexpected response %T", CommandType(b[0]), f.Response())
	}
	return Result{Index: f.Index(), CPID: res.cpid, Ino: res.ino}, res.err
}
