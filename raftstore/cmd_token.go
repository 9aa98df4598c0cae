package raftstore

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// TokenAdd stores the hash of a new join token (see HashToken). The token
// itself never enters the log, so a copy of the data directory does not
// let anyone join.
type TokenAdd struct {
	Hash      string    `json:"hash"`
	CreatedAt time.Time `json:"created_at"`
	// ID names the token in `ssi token list` and `revoke`: a public
	// handle, unrelated to the secret.
	ID string `json:"id,omitempty"`
	// ExpiresAt ends the token's life; zero: it never expires.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// Uses is how many joins it admits; 0: any number.
	Uses int `json:"uses,omitempty"`
}

// TokenRemove forgets a join token by its hash. Revoking keeps the
// record (TokenRevoke), so that a join with it is told why it failed.
type TokenRemove struct {
	Hash string `json:"hash"`
}

// TokenUse spends one use of a token for a join admitted at At (the
// admitting member's clock: the log must replay alike everywhere). It
// fails with ErrTokenSpent unless the token is valid at At.
type TokenUse struct {
	Hash string    `json:"hash"`
	At   time.Time `json:"at"`
}

// TokenRevoke revokes the token whose ID, or hash, is Key.
type TokenRevoke struct {
	Key string `json:"key"`
}

// Type implements Command.
func (TokenAdd) Type() CommandType { return CmdTokenAdd }

// Type implements Command.
func (TokenRemove) Type() CommandType { return CmdTokenRemove }

// Type implements Command.
func (TokenUse) Type() CommandType { return CmdTokenUse }

// Type implements Command.
func (TokenRevoke) Type() CommandType { return CmdTokenRevoke }

func (TokenAdd) isCommand()    {}
func (TokenRemove) isCommand() {}
func (TokenUse) isCommand()    {}
func (TokenRevoke) isCommand() {}

// TokenStatus says whether a token admits a join now, and if not, why.
type TokenStatus string

const (
	TokenValid   TokenStatus = "valid"
	TokenExpired TokenStatus = "expired"
	TokenRevoked TokenStatus = "revoked"
	TokenUsedUp  TokenStatus = "used up"
)

// Status is the token's status at now.
func (t TokenHash) Status(now time.Time) TokenStatus {
	switch {
	case t.Revoked:
		return TokenRevoked
	case !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt):
		return TokenExpired
	case t.Uses > 0 && t.Used >= t.Uses:
		return TokenUsedUp
	}
	return TokenValid
}

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
	if !validHash(c.Hash) || c.Uses < 0 || len(c.ID) > 64 {
		return fmt.Errorf("token add: hash is not lower-case hex sha-256, or bad uses or id: %w", ErrInvalid)
	}
	if _, ok := s.tokens[c.Hash]; ok {
		return fmt.Errorf("token add: %w", ErrExists)
	}
	if c.ID != "" {
		if _, ok := s.tokenByKey(c.ID); ok {
			return fmt.Errorf("token add: id %s: %w", c.ID, ErrExists)
		}
	}
	s.tokens[c.Hash] = TokenHash{Hash: c.Hash, ID: c.ID, CreatedAt: c.CreatedAt, ExpiresAt: c.ExpiresAt, Uses: c.Uses}
	return nil
}

func applyTokenRemove(s *state, c TokenRemove) error {
	if _, ok := s.tokens[c.Hash]; !ok {
		return fmt.Errorf("token remove: %w", ErrNotFound)
	}
	delete(s.tokens, c.Hash)
	return nil
}

func applyTokenUse(s *state, c TokenUse) error {
	t, ok := s.tokens[c.Hash]
	if !ok {
		return fmt.Errorf("token use: %w", ErrNotFound)
	}
	if st := t.Status(c.At); st != TokenValid {
		return fmt.Errorf("token use: token %s: %w", st, ErrTokenSpent)
	}
	t.Used++
	s.tokens[c.Hash] = t
	return nil
}

func applyTokenRevoke(s *state, c TokenRevoke) error {
	t, ok := s.tokenByKey(c.Key)
	if !ok {
		return fmt.Errorf("token revoke %q: %w", c.Key, ErrNotFound)
	}
	t.Revoked = true
	s.tokens[t.Hash] = t
	return nil
}

// tokenByKey finds a token by its ID or its full hash.
func (s *state) tokenByKey(key string) (TokenHash, bool) {
	if t, ok := s.tokens[strings.ToLower(key)]; ok {
		return t, true
	}
	for _, t := range s.tokens {
		if t.ID != "" && t.ID == key {
			return t, true
		}
	}
	return TokenHash{}, false
}
