package transport

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTokens(t *testing.T) {
	tok, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidToken(tok); err != nil {
		t.Fatalf("new token %q invalid: %v", tok, err)
	}
	if !strings.HasPrefix(tok, TokenPrefix) {
		t.Fatalf("token %q", tok)
	}
	tok2, _ := NewToken()
	if tok2 == tok {
		t.Fatal("two equal tokens")
	}
	hash, tag := TokenHash(tok), TokenTag(tok)
	if len(hash) != 64 || len(tag) != 16 {
		t.Fatalf("hash %q tag %q", hash, tag)
	}
	secret := tok[len(TokenPrefix):]
	for _, s := range []string{secret[:8], secret[len(secret)-8:], hash[:8], hash[len(hash)-8:]} {
		if strings.Contains(tag, s) {
			t.Fatalf("tag %q reveals %q", tag, s)
		}
	}
	if TokenTag(tok2) == tag || TokenTag(tok) != tag {
		t.Fatal("tag not a function of the token")
	}
	if joinID(hash) == tag {
		t.Fatal("join id equals the public tag")
	}
}

func TestValidTokenRejectsJunk(t *testing.T) {
	tok, _ := NewToken()
	body := tok[len(TokenPrefix):]
	junk := []string{
		"", "ssi1.", "hello", tok + "a", tok[:len(tok)-1], " " + tok[1:],
		"ssi2." + body, strings.ToUpper(tok), TokenPrefix + strings.Repeat("1", len(body)),
		TokenPrefix + strings.Repeat("a", len(body)-1) + "=", TokenHash(tok),
	}
	for _, s := range junk {
		err := ValidToken(s)
		if !errors.Is(err, ErrTokenFormat) {
			t.Errorf("%q accepted: %v", s, err)
			continue
		}
		if len(s) > len(TokenPrefix) && strings.Contains(err.Error(), s) {
			t.Errorf("error echoes the candidate secret: %v", err)
		}
	}
}

func TestNormalizeHash(t *testing.T) {
	tok, _ := NewToken()
	h := TokenHash(tok)
	if normalizeHash(tok) != h || normalizeHash(h) != h {
		t.Fatal("token and hash must both name the hash")
	}
	for _, bad := range []string{"", "junk", strings.ToUpper(h), h[:62]} {
		if normalizeHash(bad) != "" {
			t.Errorf("%q taken for a hash", bad)
		}
	}
}

// A token file is taken only if nobody else can read or replace it.
func TestReadTokenFile(t *testing.T) {
	tok, _ := NewToken()
	dir := t.TempDir()
	write := func(name, data string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "\n"+tok+"\n", 0o600)
	if got, err := ReadTokenFile(good); err != nil || got != tok {
		t.Fatalf("a 0600 file: %q, %v", got, err)
	}
	if got, err := ReadTokenFile(write("ro", tok, 0o400)); err != nil || got != tok {
		t.Fatalf("a 0400 file: %q, %v", got, err)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o620, 0o602} {
		p := write("open", tok, mode)
		_, err := ReadTokenFile(p)
		if !errors.Is(err, ErrTokenFile) || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: %v", mode, err)
		}
		if err != nil && strings.Contains(err.Error(), tok) {
			t.Errorf("the error shows the token: %v", err)
		}
	}
	if _, err := ReadTokenFile(dir); !errors.Is(err, ErrTokenFile) {
		t.Errorf("a directory: %v", err)
	}
	if _, err := ReadTokenFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v", err)
	}
	if _, err := ReadTokenFile(write("junk", "not a token", 0o600)); !errors.Is(err, ErrTokenFormat) {
		t.Errorf("junk: %v", err)
	}
	if os.Geteuid() == 0 {
		// Root reads a file of another user only if that user is root.
		p := write("theirs", tok, 0o600)
		if err := os.Chown(p, 1000, 1000); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadTokenFile(p); !errors.Is(err, ErrTokenFile) || !strings.Contains(err.Error(), "owned by uid 1000") {
			t.Errorf("a file of uid 1000: %v", err)
		}
	}
}
