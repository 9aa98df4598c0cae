package transport

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
)

// TokenPrefix starts every join token; the digit is the token version,
// so that a future format is told apart rather than misread.
const TokenPrefix = "ssi1."

// tokenBytes is the entropy of a token: far beyond any brute force.
const tokenBytes = 32

var tokenEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// tokenLen is the length of a token string.
var tokenLen = len(TokenPrefix) + tokenEncoding.EncodedLen(tokenBytes)

// NewToken returns a fresh join token: TokenPrefix and 32 random bytes
// in lowercase base32, easy to copy by hand and to put in a config file.
func NewToken() (string, error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("new token: %w", err)
	}
	return TokenPrefix + tokenEncoding.EncodeToString(b), nil
}

// NewID is a short random id in hex (12 digits): a new cluster's (its
// CA is named by it) or a migration's.
func NewID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ValidToken checks the syntax of a join token; the error, wrapping
// ErrTokenFormat, says what a token looks like without echoing s, which
// may be a mistyped secret.
func ValidToken(s string) error {
	if len(s) != tokenLen || !strings.HasPrefix(s, TokenPrefix) {
		return fmt.Errorf("%w: want %q followed by %d base32 characters (a-z, 2-7)",
			ErrTokenFormat, TokenPrefix, tokenLen-len(TokenPrefix))
	}
	b, err := tokenEncoding.DecodeString(s[len(TokenPrefix):])
	if err != nil || len(b) != tokenBytes {
		return fmt.Errorf("%w: not lowercase base32 (a-z, 2-7) after %q", ErrTokenFormat, TokenPrefix)
	}
	return nil
}

// TokenHash is the hex SHA-256 of token: what the replicated state keeps
// and what Mux join handlers accept. It is the key of the join proofs,
// so it admits newcomers and must stay among members (see the package
// doc); it keeps the token itself out of state, logs and snapshots.
func TokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// TokenTag is a short public tag of token for discovery beacons: agents
// with the same token recognise each other by it, while the tag reveals
// neither the token nor its hash (a different, domain-separated digest).
func TokenTag(token string) string {
	h := sha256.Sum256([]byte("ssi-beacon:" + token))
	return hex.EncodeToString(h[:8])
}

// joinKey is the HMAC key of the join proofs for a token hash.
func joinKey(hash string) ([]byte, bool) {
	k, err := hex.DecodeString(hash)
	return k, err == nil && len(k) == sha256.Size
}

// joinID names a token in the join hello so that a server holding many
// hashes knows which one to prove with. It is derived from the hash,
// which is all a server has, and reveals nothing about either.
func joinID(hash string) string {
	h := sha256.Sum256([]byte("ssi-join-id:" + hash))
	return hex.EncodeToString(h[:8])
}

// normalizeHash accepts a token or a TokenHash and returns the hash, or
// "" if s is neither.
func normalizeHash(s string) string {
	if ValidToken(s) == nil {
		return TokenHash(s)
	}
	if _, ok := joinKey(s); ok && strings.ToLower(s) == s {
		return s
	}
	return ""
}

// ErrTokenFile means a join token file is not safe to take a secret
// from: others could read it or replace it.
var ErrTokenFile = errors.New("unsafe join token file")

// ReadTokenFile reads the join token in path: a regular file owned by
// root or by this process's user, with no permission for group or
// others, holding one token (surrounding white space is ignored). What
// others can read is a leaked token, and what they can write is a token
// of their choosing: both are refused, with the fix in the error.
func ReadTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("join token file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("join token file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%w %s: not a regular file", ErrTokenFile, path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%w %s: mode %04o lets others read or write it (chmod 600 %s)", ErrTokenFile, path, perm, path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 && int(sys.Uid) != os.Geteuid() {
		return "", fmt.Errorf("%w %s: owned by uid %d, not by root or uid %d", ErrTokenFile, path, sys.Uid, os.Geteuid())
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("join token file %s: %w", path, err)
	}
	tok := strings.TrimSpace(string(b))
	if err := ValidToken(tok); err != nil {
		return "", fmt.Errorf("join token file %s: %w", path, err)
	}
	return tok, nil
}

// WriteSecretFile writes data to path readable by its owner only, even
// if the file existed with another mode (ReadTokenFile refuses any
// other): a join token or a record that holds one. It writes in place,
// not by rename, so a path like /dev/stdout stays what it is.
func WriteSecretFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
