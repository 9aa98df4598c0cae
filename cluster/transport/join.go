package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// JoinTimeout bounds a whole join exchange after the TLS handshake.
const JoinTimeout = 10 * time.Second

// maxJoinIPs bounds the addresses a newcomer may ask for.
const maxJoinIPs = 32

// Why a token the cluster knows no longer admits anyone. The server
// says so only to a newcomer that proved it holds the token, and Join
// returns the matching error, so that the operator learns why at once.
var (
	ErrTokenExpired = errors.New("join token expired")
	ErrTokenRevoked = errors.New("join token revoked")
	ErrTokenUsedUp  = errors.New("join token used up")
	// ErrNoIssuer means neither the member asked nor the one it sent
	// the newcomer to holds the cluster CA key.
	ErrNoIssuer = errors.New("no member holding the cluster ca key answered")
)

// Reply codes of this file, besides frame.go's: a refused token, and a
// member without the CA key sending the newcomer to one that has it.
const (
	codeExpired  = "token_expired"
	codeRevoked  = "token_revoked"
	codeUsedUp   = "token_used_up"
	codeRedirect = "redirect"
)

// tokenRefusals maps each spent-token error to its reply code.
var tokenRefusals = []struct {
	code string
	err  error
}{
	{codeExpired, ErrTokenExpired},
	{codeRevoked, ErrTokenRevoked},
	{codeUsedUp, ErrTokenUsedUp},
}

// joinAnswer is the reply as it travels: frame.go's joinReply and, in a
// redirect, the member (host:port) to ask instead.
type joinAnswer struct {
	joinReply
	Redirect string `json:"redirect,omitempty"`
}

// JoinHandler lets a Mux admit newcomers on ProtoJoin. Its functions are
// called for every join, so tokens and rules can change at run time;
// they must be safe for concurrent use. Only a member holding the CA key
// issues certificates; the others send newcomers to Redirect.
type JoinHandler struct {
	// Tokens returns the join tokens the cluster knows, valid or not,
	// each as the token itself or as its TokenHash (what the replicated
	// state stores). Required.
	Tokens func() []string
	// Status says whether the newcomer's token admits it now: nil, or
	// ErrTokenExpired, ErrTokenRevoked or ErrTokenUsedUp. It is asked
	// only once the newcomer proved the token, before anything else. Nil:
	// every token Tokens returns is valid.
	Status func(n Newcomer) error
	// Admit is called once the newcomer proved the token, before its
	// certificate is issued; an error refuses it (for example a duplicate
	// name) and its text is sent to the newcomer. The newcomer may still
	// fail after Admit returned nil, and retry: Admit should accept a
	// retry by the same name. Nil admits every newcomer.
	Admit func(name string, ips []net.IP) error
	// Spend spends one use of the newcomer's token, after Admit and
	// before its certificate is issued. It returns one of Status's
	// errors when the token admits no more joins. Nil spends nothing.
	Spend func(ctx context.Context, n Newcomer) error
	// Issued records a certificate issued to name before it is sent: a
	// certificate the cluster has no record of cannot be revoked with its
	// node. An error refuses the newcomer. Nil records nothing.
	Issued func(ctx context.Context, name string, cert *x509.Certificate) error
	// Redirect names a member (host:port) holding the CA key, for a
	// newcomer that asked a member without it; "" if none is known.
	Redirect func() string
	// Welcome returns an opaque blob for an admitted newcomer (cluster
	// id, members, ...); Join returns it as is. Nil sends none.
	Welcome func(name string) ([]byte, error)
	// CertLifetime is the lifetime of the certificates issued
	// (NodeValidity if zero).
	CertLifetime time.Duration
}

// Newcomer is a machine that proved it holds a join token.
type Newcomer struct {
	Name string
	// TokenHash is the TokenHash of its token.
	TokenHash string
	// Key is the hex SHA-256 of its public key: a retry by a newcomer
	// that keeps its key (JoinWithKey) has the same, so that a member
	// can tell a retry after a lost reply from another join.
	Key string
}

// serveJoin runs the server side of the join exchange on tc.
func (m *Mux) serveJoin(tc *tls.Conn, remote string) {
	h := m.opts.Join
	if h == nil || h.Tokens == nil {
		m.log.refuse("refused: join not served here", "remote", remote)
		return
	}
	deadline := time.Now().Add(JoinTimeout)
	_ = tc.SetDeadline(deadline)
	hash, ekm, ok := m.joinChallenge(tc, h, remote)
	if !ok {
		return
	}
	key, _ := joinKey(hash)
	var req joinRequest
	if err := readFrame(tc, &req); err != nil {
		m.log.refuse("refused join: bad request", "remote", remote, "err", err)
		return
	}
	if !hmac.Equal(req.Proof, proof(key, labelClient, ekm)) {
		m.log.refuse("refused join: bad token proof", "remote", remote)
		_ = writeFrame(tc, joinReply{Code: codeBadToken})
		return
	}
	// Recording the token's use and the certificate must end before the
	// newcomer stops waiting for the reply.
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(-time.Second))
	defer cancel()
	reply, level, msg := m.admit(ctx, h, hash, &req)
	if err := writeFrame(tc, reply); err != nil {
		m.log.refuse("join: reply failed", "remote", remote, "node", req.Name, "err", err)
		return
	}
	if level == slog.LevelInfo {
		m.log.log.Info(msg, "remote", remote, "node", req.Name)
		return
	}
	m.log.refuse(msg, "remote", remote, "node", req.Name, "err", reply.Error)
}

// joinChallenge reads the hello, finds the token it names and proves the
// server knows it. It returns the token's hash and the session's keying
// material, or false once the newcomer was refused.
func (m *Mux) joinChallenge(tc *tls.Conn, h *JoinHandler, remote string) (string, []byte, bool) {
	var hello joinHello
	if err := readFrame(tc, &hello); err != nil || hello.V != joinVersion {
		m.log.refuse("refused join: bad hello", "remote", remote, "err", err, "v", hello.V)
		return "", nil, false
	}
	var hash string
	for _, t := range h.Tokens() {
		if th := normalizeHash(t); th != "" && joinID(th) == hello.ID {
			hash = th
			break
		}
	}
	if hash == "" {
		m.log.refuse("refused join: unknown token", "remote", remote)
		_ = writeFrame(tc, joinChallenge{Code: codeBadToken})
		return "", nil, false
	}
	key, _ := joinKey(hash)
	cs := tc.ConnectionState()
	ekm, err := cs.ExportKeyingMaterial(ekmLabel, nil, 32)
	if err != nil {
		m.log.refuse("refused join: keying material", "remote", remote, "err", err)
		return "", nil, false
	}
	if err := writeFrame(tc, joinChallenge{Proof: proof(key, labelServer, ekm)}); err != nil {
		m.log.refuse("refused join: challenge failed", "remote", remote, "err", err)
		return "", nil, false
	}
	return hash, ekm, true
}

// admit checks a proven request: the token's status, then who issues
// (a member without the CA key redirects), the caller's rules, the
// token's use; then it issues and records the certificate. It returns
// the reply and how to log the outcome.
func (m *Mux) admit(ctx context.Context, h *JoinHandler, hash string, req *joinRequest) (joinAnswer, slog.Level, string) {
	ips, pub, err := parseJoinRequest(req)
	if err != nil {
		return refuse(codeInvalid, err.Error(), "refused join: invalid request")
	}
	digest := sha256.Sum256(req.PublicKey)
	n := Newcomer{Name: req.Name, TokenHash: hash, Key: hex.EncodeToString(digest[:])}
	if h.Status != nil {
		if err := h.Status(n); err != nil {
			return refuse(refusalCode(err), err.Error(), "refused join: "+err.Error())
		}
	}
	// The CA key as this node holds it now: voters take it and give it
	// up while the agent runs.
	ca := m.Identity().Signer()
	if ca == nil {
		if addr := redirectTo(h); addr != "" {
			return joinAnswer{joinReply: joinReply{Code: codeRedirect}, Redirect: addr}, slog.LevelInfo,
				"join: sent the newcomer to " + addr + " (this node holds no ca key)"
		}
		return refuse(codeInternal, "this node holds no ca key", "refused join: no ca key")
	}
	if h.Admit != nil {
		if err := h.Admit(req.Name, ips); err != nil {
			return refuse(codeRefused, err.Error(), "refused join: not admitted")
		}
	}
	if h.Spend != nil {
		if err := h.Spend(ctx, n); err != nil {
			if code := refusalCode(err); code != codeInternal {
				return refuse(code, err.Error(), "refused join: "+err.Error())
			}
			return refuse(codeInternal, "cannot record the token's use", "join: spend token: "+err.Error())
		}
	}
	return issue(ctx, h, ca, req.Name, pub, ips)
}

// issue signs the newcomer's certificate, has it recorded and returns
// the reply that carries it.
func issue(ctx context.Context, h *JoinHandler, ca *CA, name string, pub *ecdsa.PublicKey, ips []net.IP) (joinAnswer, slog.Level, string) {
	lifetime := h.CertLifetime
	if lifetime <= 0 {
		lifetime = NodeValidity
	}
	cert, err := IssueFor(ca, name, pub, ips, lifetime)
	if err != nil {
		return refuse(codeInternal, "cannot issue certificate", "join: issue failed: "+err.Error())
	}
	if h.Issued != nil {
		if err := h.Issued(ctx, name, cert); err != nil {
			return refuse(codeInternal, "cannot record the certificate", "join: record certificate: "+err.Error())
		}
	}
	var blob []byte
	if h.Welcome != nil {
		if blob, err = h.Welcome(name); err != nil {
			return refuse(codeInternal, "cannot welcome node", "join: welcome failed: "+err.Error())
		}
	}
	// The CA key stays with the members that issue: the newcomer gets
	// the CA certificate only.
	return joinAnswer{joinReply: joinReply{Cert: cert.Raw, CACert: ca.Cert.Raw, Blob: blob}}, slog.LevelInfo, "admitted node"
}

// refuse is a refusal's reply (code and text for the newcomer) and the
// log line of it.
func refuse(code, text, msg string) (joinAnswer, slog.Level, string) {
	return joinAnswer{joinReply: joinReply{Code: code, Error: text}}, slog.LevelWarn, msg
}

// redirectTo is the member to send a newcomer to, or "".
func redirectTo(h *JoinHandler) string {
	if h.Redirect == nil {
		return ""
	}
	return h.Redirect()
}

// refusalCode is the reply code of a spent token's error, or
// codeInternal for any other error.
func refusalCode(err error) string {
	for _, r := range tokenRefusals {
		if errors.Is(err, r.err) {
			return r.code
		}
	}
	return codeInternal
}

// refusalError is the error of a spent token's reply code, or nil.
func refusalError(code string) error {
	for _, r := range tokenRefusals {
		if r.code == code {
			return r.err
		}
	}
	return nil
}

// parseJoinRequest validates what a newcomer asks to be certified.
func parseJoinRequest(req *joinRequest) ([]net.IP, *ecdsa.PublicKey, error) {
	if err := ValidNodeName(req.Name); err != nil {
		return nil, nil, err
	}
	if len(req.IPs) > maxJoinIPs {
		return nil, nil, fmt.Errorf("%d addresses, at most %d", len(req.IPs), maxJoinIPs)
	}
	ips := make([]net.IP, 0, len(req.IPs))
	for _, s := range req.IPs {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, nil, fmt.Errorf("address %q is not an ip", s)
		}
		ips = append(ips, ip)
	}
	k, err := x509.ParsePKIXPublicKey(req.PublicKey)
	if err != nil {
		return nil, nil, fmt.Errorf("public key: %w", err)
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, nil, fmt.Errorf("public key %T is not ecdsa p-256", k)
	}
	return ips, pub, nil
}
