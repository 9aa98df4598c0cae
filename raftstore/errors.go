package raftstore

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error the package returns wraps one of these (or
// a context error), so callers test with errors.Is and never need raft's
// own error values.
var (
	// ErrNotLeader means the call must be made on the leader. The error
	// is a *NotLeaderError naming the leader when one is known.
	ErrNotLeader = errors.New("not the leader")
	// ErrNoLeader means the cluster has no leader right now (no quorum
	// or an election in progress); retrying later may succeed.
	ErrNoLeader = errors.New("no leader")
	// ErrLeadershipLost means the leader lost its leadership while the
	// command was in flight: the command may or may not be committed.
	ErrLeadershipLost = errors.New("leadership lost while applying")
	// ErrTimeout means raft did not accept the command in time.
	ErrTimeout = errors.New("raft timeout")
	// ErrClosed means the store is closed or closing.
	ErrClosed = errors.New("store closed")
	// ErrConfig means Open was given an unusable Config.
	ErrConfig = errors.New("bad raftstore config")

	// ErrNotFound is a state error: the node, process, migration or
	// token named by a command does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists is a state error: the object a command creates exists.
	ErrExists = errors.New("already exists")
	// ErrBusy is a state error: the process is already migrating.
	ErrBusy = errors.New("busy")
	// ErrInvalid is a state error: the command's values are not
	// acceptable in the current state (bad state name, unknown admin
	// switch, wrong source node...).
	ErrInvalid = errors.New("invalid command")
	// ErrNotEmpty is a state error: the home directory to remove or
	// replace has entries.
	ErrNotEmpty = errors.New("directory not empty")
	// ErrIsDir is a state error: the home inode is a directory and the
	// command wants something else (unlink, write, link).
	ErrIsDir = errors.New("is a directory")
	// ErrNotDir is a state error: the home inode is not a directory and
	// the command wants one (a parent, rmdir).
	ErrNotDir = errors.New("not a directory")
	// ErrFileTooBig is a state error: the write or truncate would pass
	// the home tree's maximum file size.
	ErrFileTooBig = errors.New("file too big")
	// ErrNoSpace is a state error: the write or truncate would pass the
	// home tree's quota.
	ErrNoSpace = errors.New("no space left")

	// ErrBadCommand means encoded command bytes are not a command this
	// version knows: unknown type or version, or an undecodable body.
	ErrBadCommand = errors.New("bad command encoding")
	// ErrBadSnapshot means a snapshot stream is truncated or corrupt.
	ErrBadSnapshot = errors.New("bad snapshot")
	// ErrTokenSpent means a join token is expired, revoked or used up.
	ErrTokenSpent = errors.New("join token no longer valid")
)

// NotLeaderError is returned by leader-only calls made on a follower.
// errors.Is(err, ErrNotLeader) holds. LeaderID and LeaderAddr are empty
// when no leader is known, and then errors.Is(err, ErrNoLeader) holds
// too: the caller retries after WaitForLeader.
type NotLeaderError struct {
	LeaderID   string
	LeaderAddr string
}

// Error implements error.
func (e *NotLeaderError) Error() string {
	if e.LeaderAddr == "" {
		return "not the leader (leader unknown)"
	}
	return fmt.Sprintf("not the leader (leader is %s at %s)", e.LeaderID, e.LeaderAddr)
}

// Is makes errors.Is(err, ErrNotLeader) true, and errors.Is(err,
// ErrNoLeader) when the leader is unknown.
func (e *NotLeaderError) Is(target error) bool {
	return target == ErrNotLeader || (target == ErrNoLeader && e.LeaderAddr == "")
}

// Error codes carry a sentinel across a process boundary: a follower
// forwards a command to the leader, the leader answers with ErrorCode and
// the message, and the follower rebuilds an error that errors.Is the same
// sentinel with ErrorFromCode.
var errorCodes = []struct {
	code string
	err  error
}{
	{"not_leader", ErrNotLeader},
	{"no_leader", ErrNoLeader},
	{"leadership_lost", ErrLeadershipLost},
	{"timeout", ErrTimeout},
	{"closed", ErrClosed},
	{"not_found", ErrNotFound},
	{"exists", ErrExists},
	{"busy", ErrBusy},
	{"invalid", ErrInvalid},
	{"not_empty", ErrNotEmpty},
	{"is_dir", ErrIsDir},
	{"not_dir", ErrNotDir},
	{"file_too_big", ErrFileTooBig},
	{"no_space", ErrNoSpace},
	{"bad_command", ErrBadCommand},
	{"token_spent", ErrTokenSpent},
}

// ErrorCode returns a short stable code for the sentinel err wraps ("busy",
// "not_found", ...), or "" for nil and "internal" for anything else.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	for _, c := range errorCodes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "internal"
}

// ErrorFromCode rebuilds an error from a code made by ErrorCode and the
// original message: the result wraps the code's sentinel, so errors.Is
// works on the far side of a forwarded call. A nil error for code "".
func ErrorFromCode(code, msg string) error {
	if code == "" {
		return nil
	}
	for _, c := range errorCodes {
		if c.code == code {
			return &remoteError{msg: msg, sentinel: c.err}
		}
	}
	return errors.New(msg)
}

// remoteError is an error rebuilt from a code: its message is the remote
// one, verbatim, while errors.Is still finds the sentinel.
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }
