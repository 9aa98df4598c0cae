package membership

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"ssi/cluster/transport"
	"ssi/raftstore"
)

// call serves one request of the token API and decodes its answer.
func call(t *testing.T, h http.HandlerFunc, method, body string, out any) int {
	t.Helper()
	var rd *bytes.Reader
	if body != "" {
		rd = bytes.NewReader([]byte(body))
	} else {
		rd = bytes.NewReader(nil)
	}
	rec := httptest.NewRecorder()
	h(rec, httptest.NewRequestWithContext(testContext(t), method, "/v1/tokens", rd))
	if out != nil && rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			t.Fatalf("answer %q: %v", rec.Body.String(), err)
		}
	}
	return rec.Code
}

// Create, list and revoke, as `ssi token` does: the list never shows a
// token nor its hash.
func TestTokenAPI(t *testing.T) {
	m, fc, _ := leading(t, Config{TokenTTL: 24 * time.Hour})
	api := m.Tokens()
	var plain, short TokenCreated
	if code := call(t, api.HandleCreate, http.MethodPost, "", &plain); code != http.StatusOK || transport.ValidToken(plain.Token) != nil {
		t.Fatalf("create: %d %+v", code, plain)
	}
	if d := time.Until(plain.ExpiresAt); d < 23*time.Hour || d > 24*time.Hour {
		t.Fatalf("a token without a ttl expires in %v, want token_ttl", d)
	}
	if code := call(t, api.HandleCreate, http.MethodPost, `{"ttl":60000000000,"uses":1}`, &short); code != http.StatusOK {
		t.Fatalf("create with ttl and uses: %d", code)
	}
	tk, ok := fc.s.Token(transport.TokenHash(short.Token))
	if !ok || tk.Uses != 1 || tk.ID != short.ID || time.Until(tk.ExpiresAt) > time.Minute {
		t.Fatalf("recorded %+v, %v", tk, ok)
	}
	for _, bad := range []string{`{"ttl":-1}`, `{"uses":-2}`, `{"ttl":`} {
		if code := call(t, api.HandleCreate, http.MethodPost, bad, nil); code != http.StatusBadRequest {
			t.Errorf("create %s: %d", bad, code)
		}
	}

	if code := call(t, api.HandleRevoke, http.MethodPost, `{"id":"`+short.ID+`"}`, nil); code != http.StatusOK {
		t.Fatalf("revoke: %d", code)
	}
	if code := call(t, api.HandleRevoke, http.MethodPost, `{"id":"nosuchid"}`, nil); code != http.StatusNotFound {
		t.Fatalf("revoke of an unknown id: %d", code)
	}
	if code := call(t, api.HandleRevoke, http.MethodPost, `{}`, nil); code != http.StatusBadRequest {
		t.Fatalf("revoke without an id: %d", code)
	}

	rec := httptest.NewRecorder()
	api.HandleList(rec, httptest.NewRequest(http.MethodGet, "/v1/tokens", nil))
	body := rec.Body.String()
	for _, secret := range []string{plain.Token, short.Token, transport.TokenHash(plain.Token), transport.TokenHash(short.Token)} {
		if strings.Contains(body, secret) {
			t.Fatalf("the list shows a secret: %s", body)
		}
	}
	var list []TokenInfo
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list) != 2 {
		t.Fatalf("list %s: %v", body, err)
	}
	got := map[string]TokenInfo{list[0].ID: list[0], list[1].ID: list[1]}
	if got[plain.ID].Status != string(raftstore.TokenValid) || got[short.ID].Status != string(raftstore.TokenRevoked) || got[short.ID].Uses != 1 {
		t.Fatalf("list %+v", list)
	}
}

// A token recorded without an id (by an older agent) gets one derived
// from its hash, and can be revoked by it.
func TestTokenWithoutID(t *testing.T) {
	m, fc, _ := leading(t, Config{})
	hash := transport.TokenHash(mustToken(t))
	if _, err := fc.Apply(testContext(t), raftstore.TokenAdd{Hash: hash, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	var list []TokenInfo
	if call(t, m.Tokens().HandleList, http.MethodGet, "", &list); len(list) != 1 || list[0].ID == "" || strings.Contains(hash, list[0].ID[1:]) {
		t.Fatalf("list %+v", list)
	}
	if code := call(t, m.Tokens().HandleRevoke, http.MethodPost, `{"id":"`+list[0].ID+`"}`, nil); code != http.StatusOK {
		t.Fatalf("revoke by the derived id: %d", code)
	}
	if tk, _ := fc.s.Token(hash); !tk.Revoked {
		t.Fatal("not revoked")
	}
}
