package raftstore

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"
)

// TokenAdd stores the hash of a new join token (see HashToken). The token
// itself never enters the log, so a copy of the data directory does not
// let anyone join.
type TokenAdd struct {
	Hash      string    `json:"hash"`
	CreatedAt time.Time `json:"created_at"`
}

// TokenRemove revokes a join token by its hash.
type TokenRemove struct {
	Hash string `json:"hash"`
}

// Type implements Command.
func (TokenAdd) Type() CommandType { return CmdTokenAdd }

// Type implements Command.
func (TokenRemove) Type() CommandType { return CmdTokenRemove }

func (TokenAdd) isCommand()    {}
func (TokenRemove) isCommand() {}

// HashToken returns the hex SHA-256 of a join token, the form TokenAdd,
// TokenRemove and HasToken take.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// validHash accepts lower-case hex SHA-256 only, so one token cannot be
// stored twice under two spellings.
func validHash(h string) bool {
	if len(h) != 2*sha256.Size {
		return false
	}
	for _, r := range h {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

func applyTokenAdd(s *state, c TokenAdd) error {
	if !validHash(c.Hash) {
		return fmt.Errorf("token add: hash is not lower-case hex sha-256: %w", ErrInvalid)
	}
	if _, ok := s.tokens[c.Hash]; ok {
		return fmt.Errorf("token add: %w", ErrExists)
	}
	s.tokens[c.Hash] = TokenHash{Hash: c.Hash, CreatedAt: c.CreatedAt}
	return nil
}

func applyTokenRemove(s *state, c TokenRemove) error {
	if _, ok := s.tokens[c.Hash]; !ok {
		return fmt.Errorf("token remove: %w", ErrNotFound)
	}
	delete(s.tokens, c.Hash)
	return nil
}
