package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// JoinTimeout bounds a whole join exchange after the TLS handshake.
const JoinTimeout = 10 * time.Second

// maxJoinIPs bounds the addresses a newcomer may ask for.
const maxJoinIPs = 32

// JoinHandler lets a Mux admit newcomers on ProtoJoin. Its functions are
// called for every join, so tokens and rules can change at run time;
// they must be safe for concurrent use.
type JoinHandler struct {
	// Tokens returns the join tokens valid now, each as the token itself
	// or as its TokenHash (what the replicated state stores). Required.
	Tokens func() []string
	// Admit is called once the newcomer proved the token, before its
	// certificate is issued; an error refuses it (for example a duplicate
	// name) and its text is sent to the newcomer. The newcomer may still
	// fail after Admit returned nil, and retry: Admit should accept a
	// retry by the same name. Nil admits every newcomer.
	Admit func(name string, ips []net.IP) error
	// Welcome returns an opaque blob for an admitted newcomer (cluster
	// id, members, ...); Join returns it as is. Nil sends none.
	Welcome func(name string) ([]byte, error)
}

// serveJoin runs the server side of the join exchange on tc.
func (m *Mux) serveJoin(tc *tls.Conn, remote string) {
	h := m.opts.Join
	if h == nil || h.Tokens == nil {
		m.log.refuse("refused: join not served here", "remote", remote)
		return
	}
	_ = tc.SetDeadline(time.Now().Add(JoinTimeout))
	key, ekm, ok := m.joinChallenge(tc, h, remote)
	if !ok {
		return
	}
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
	reply, level, msg := m.admit(h, &req)
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
// server knows it. It returns the proof key and the session's keying
// material, or false once the newcomer was refused.
func (m *Mux) joinChallenge(tc *tls.Conn, h *JoinHandler, remote string) ([]byte, []byte, bool) {
	var hello joinHello
	if err := readFrame(tc, &hello); err != nil || hello.V != joinVersion {
		m.log.refuse("refused join: bad hello", "remote", remote, "err", err, "v", hello.V)
		return nil, nil, false
	}
	var key []byte
	for _, t := range h.Tokens() {
		if hash := normalizeHash(t); hash != "" && joinID(hash) == hello.ID {
			key, _ = joinKey(hash)
			break
		}
	}
	if key == nil {
		m.log.refuse("refused join: unknown token", "remote", remote)
		_ = writeFrame(tc, joinChallenge{Code: codeBadToken})
		return nil, nil, false
	}
	cs := tc.ConnectionState()
	ekm, err := cs.ExportKeyingMaterial(ekmLabel, nil, 32)
	if err != nil {
		m.log.refuse("refused join: keying material", "remote", remote, "err", err)
		return nil, nil, false
	}
	if err := writeFrame(tc, joinChallenge{Proof: proof(key, labelServer, ekm)}); err != nil {
		m.log.refuse("refused join: challenge failed", "remote", remote, "err", err)
		return nil, nil, false
	}
	return key, ekm, true
}

// admit checks a proven request, asks the caller and issues the
// certificate. It returns the reply and how to log the outcome.
func (m *Mux) admit(h *JoinHandler, req *joinRequest) (joinReply, slog.Level, string) {
	ips, pub, err := parseJoinRequest(req)
	if err != nil {
		return joinReply{Code: codeInvalid, Error: err.Error()}, slog.LevelWarn, "refused join: invalid request"
	}
	ca := m.id.CA
	if ca.Key == nil {
		return joinReply{Code: codeInternal, Error: "this node holds no ca key"}, slog.LevelWarn, "refused join: no ca key"
	}
	if h.Admit != nil {
		if err := h.Admit(req.Name, ips); err != nil {
			return joinReply{Code: codeRefused, Error: err.Error()}, slog.LevelWarn, "refused join: not admitted"
		}
	}
	cert, err := Issue(ca, req.Name, pub, ips)
	if err != nil {
		return joinReply{Code: codeInternal, Error: "cannot issue certificate"}, slog.LevelWarn, "join: issue failed: " + err.Error()
	}
	var blob []byte
	if h.Welcome != nil {
		if blob, err = h.Welcome(req.Name); err != nil {
			return joinReply{Code: codeInternal, Error: "cannot welcome node"}, slog.LevelWarn, "join: welcome failed: " + err.Error()
		}
	}
	caKey, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return joinReply{Code: codeInternal, Error: "cannot send ca"}, slog.LevelWarn, "join: marshal ca key: " + err.Error()
	}
	reply := joinReply{Cert: cert.Raw, CACert: ca.Cert.Raw, CAKey: caKey, Blob: blob}
	return reply, slog.LevelInfo, "admitted node"
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
