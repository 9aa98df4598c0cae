package transport

import (
	"errors"
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
