package membership

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/transport"
	"ssi/raftstore"
)

// spentMemory is how long a member remembers a newcomer it spent a
// token's use on: a retry within it (a lost reply) spends none.
const spentMemory = 10 * time.Minute

// admission is the membership's side of the join handshake: the token's
// status, its use and the certificate's record, all in the agreed
// state, and where a member without the CA key sends newcomers.
type admission struct {
	m *Membership

	mu    sync.Mutex           // protects spent
	spent map[string]time.Time // newcomer (token, name, key) -> when its use was spent
}

// newcomerKey names a newcomer in admission.spent.
func newcomerKey(n transport.Newcomer) string {
	return n.TokenHash + "/" + n.Name + "/" + n.Key
}

// retry reports whether n had a use of its token spent here lately.
func (a *admission) retry(n transport.Newcomer) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, at := range a.spent {
		if time.Since(at) > spentMemory {
			delete(a.spent, k)
		}
	}
	_, ok := a.spent[newcomerKey(n)]
	return ok
}

// status says whether n's token admits it now. A newcomer whose use was
// spent here already is let through a used-up token, so that its retry
// is not refused for the last use it spent itself.
func (a *admission) status(n transport.Newcomer) error {
	s, err := a.m.c.Store()
	if err != nil {
		return err
	}
	t, ok := s.Token(n.TokenHash)
	if !ok {
		return errors.New("join token unknown")
	}
	st := t.Status(time.Now())
	if st == raftstore.TokenUsedUp && a.retry(n) {
		return nil
	}
	return statusError(st)
}

// spend spends one use of n's token through the leader, once per
// newcomer: Raft orders two joins racing for a token's last use, and
// the second is refused.
func (a *admission) spend(ctx context.Context, n transport.Newcomer) error {
	if a.retry(n) {
		a.m.log.Info("join retried: its token's use was spent already", "node", n.Name)
		return nil
	}
	now := time.Now()
	if _, err := a.m.c.Apply(ctx, raftstore.TokenUse{Hash: n.TokenHash, At: now}); err != nil {
		return a.spentWhy(n.TokenHash, err)
	}
	a.mu.Lock()
	a.spent[newcomerKey(n)] = now
	a.mu.Unlock()
	return nil
}

// spentWhy turns a failed TokenUse into the token's refusal: by this
// replica's status, or, when it lags the leader that refused, by the
// leader's words.
func (a *admission) spentWhy(hash string, err error) error {
	if s, serr := a.m.c.Store(); serr == nil {
		if t, ok := s.Token(hash); ok {
			if why := statusError(t.Status(time.Now())); why != nil {
				return why
			}
		}
	}
	if errors.Is(err, raftstore.ErrTokenSpent) || strings.Contains(err.Error(), raftstore.ErrTokenSpent.Error()) {
		for _, st := range []raftstore.TokenStatus{raftstore.TokenExpired, raftstore.TokenRevoked, raftstore.TokenUsedUp} {
			if strings.Contains(err.Error(), "token "+string(st)) {
				return statusError(st)
			}
		}
	}
	return err
}

// statusError is the join refusal of a token status; nil for a valid one.
func statusError(st raftstore.TokenStatus) error {
	switch st {
	case raftstore.TokenExpired:
		return transport.ErrTokenExpired
	case raftstore.TokenRevoked:
		return transport.ErrTokenRevoked
	case raftstore.TokenUsedUp:
		return transport.ErrTokenUsedUp
	}
	return nil
}

// issued records a certificate issued to a newcomer, before it is
// sent, so that it can be refused once its node is removed.
func (a *admission) issued(ctx context.Context, name string, cert *x509.Certificate) error {
	_, err := a.m.c.Apply(ctx, raftstore.CertIssue{Serial: transport.Serial(cert), Node: name,
		NotAfter: cert.NotAfter, At: time.Now()})
	return err
}

// issuer is where a member without the CA key sends newcomers: the
// leader, else another voter; "" if it knows none.
func (a *admission) issuer() string {
	s, err := a.m.c.Store()
	if err != nil {
		return ""
	}
	if id, addr := s.Leader(); addr != "" && id != a.m.cfg.Node {
		return addr
	}
	servers, _ := s.Servers()
	for _, srv := range servers {
		if srv.Voter && srv.ID != a.m.cfg.Node {
			return srv.Addr
		}
	}
	return ""
}

// newTokenAdd is the command recording token, valid for ttl from now
// (0: no end) and uses joins (0: any number), under a fresh public id:
// a token made by `ssi token create`, or the one a founder formed its
// cluster with (Config.TokenTTL, like any other).
func newTokenAdd(token string, ttl time.Duration, uses int, now time.Time) raftstore.TokenAdd {
	c := raftstore.TokenAdd{Hash: transport.TokenHash(token), ID: transport.NewID(), CreatedAt: now, Uses: uses}
	if ttl > 0 {
		c.ExpiresAt = now.Add(ttl)
	}
	return c
}

// TokenCreate asks for a new join token (POST /v1/tokens, body optional).
type TokenCreate struct {
	// TTL is the token's life; 0: the cluster's token_ttl.
	TTL time.Duration `json:"ttl,omitempty"`
	// Uses is how many joins it admits; 0: any number.
	Uses int `json:"uses,omitempty"`
}

// TokenCreated answers TokenCreate: the only time the token is shown.
type TokenCreated struct {
	Token     string    `json:"token"`
	ID        string    `json:"id"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// TokenInfo is one line of `ssi token list`: what an operator needs to
// pick a token to revoke, and neither the token nor its hash (which
// admits newcomers as well).
type TokenInfo struct {
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"` // zero: no end
	Uses      int       `json:"uses"`                // 0: any number
	Used      int       `json:"used"`
	Status    string    `json:"status"` // valid, expired, revoked, used up
}

// TokenRevokeRequest revokes a token by its id (POST /v1/tokens/revoke).
type TokenRevokeRequest struct {
	ID string `json:"id"`
}

// Tokens serves the local API's join tokens; the caller lets root only.
type Tokens struct {
	c   Cluster
	ttl time.Duration
}

// Tokens returns the handlers of the local API's join tokens.
func (m *Membership) Tokens() *Tokens { return &Tokens{c: m.c, ttl: m.cfg.TokenTTL} }

// HandleCreate makes a token and records its hash, with a life and a
// number of uses, through the leader.
func (t *Tokens) HandleCreate(w http.ResponseWriter, r *http.Request) {
	var req TokenCreate
	if r.ContentLength != 0 {
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
			api.WriteError(w, http.StatusBadRequest, fmt.Errorf("token create: %w", err))
			return
		}
	}
	if req.TTL < 0 || req.Uses < 0 {
		api.WriteError(w, http.StatusBadRequest, errors.New("token create: ttl and uses must not be negative"))
		return
	}
	if req.TTL == 0 {
		req.TTL = t.ttl
	}
	tok, err := transport.NewToken()
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, err)
		return
	}
	cmd := newTokenAdd(tok, req.TTL, req.Uses, time.Now())
	if _, err := t.c.Apply(r.Context(), cmd); err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, TokenCreated{Token: tok, ID: cmd.ID, ExpiresAt: cmd.ExpiresAt})
}

// HandleList lists the tokens the cluster knows, oldest first.
func (t *Tokens) HandleList(w http.ResponseWriter, _ *http.Request) {
	s, err := t.c.Store()
	if err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	now := time.Now()
	out := []TokenInfo{}
	for _, h := range s.TokenHashes() {
		out = append(out, TokenInfo{ID: tokenID(h), CreatedAt: h.CreatedAt, ExpiresAt: h.ExpiresAt,
			Uses: h.Uses, Used: h.Used, Status: string(h.Status(now))})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	api.WriteJSON(w, http.StatusOK, out)
}

// HandleRevoke revokes the token with the id asked; joins with it are
// refused from then on, and told so.
func (t *Tokens) HandleRevoke(w http.ResponseWriter, r *http.Request) {
	var req TokenRevokeRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.ID == "" {
		api.WriteError(w, http.StatusBadRequest, errors.New("token revoke: want {\"id\": ID}"))
		return
	}
	s, err := t.c.Store()
	if err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	for _, h := range s.TokenHashes() {
		if tokenID(h) != req.ID {
			continue
		}
		if _, err := t.c.Apply(r.Context(), raftstore.TokenRevoke{Key: h.Hash}); err != nil {
			api.WriteError(w, http.StatusServiceUnavailable, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, req)
		return
	}
	api.WriteError(w, http.StatusNotFound, fmt.Errorf("token revoke: no token with id %q (ssi token list): %w", req.ID, raftstore.ErrNotFound))
}

// tokenID is a token's public name: its id, or for a token recorded
// without one (by an older agent) a tag derived from its hash, which
// does not reveal the hash.
func tokenID(h raftstore.TokenHash) string {
	if h.ID != "" {
		return h.ID
	}
	sum := sha256.Sum256([]byte("ssi-token-id:" + h.Hash))
	return "h" + hex.EncodeToString(sum[:6])
}
