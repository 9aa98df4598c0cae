package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"
)

// Join makes this machine a member: it connects to the member at addr
// with ProtoJoin, proves it holds token while checking that the server
// holds it too, and sends nodeName, ips and a fresh public key. It
// returns the new identity (to Save) and the server's opaque blob
// (JoinHandler.Welcome). Nothing about the newcomer is sent before the
// server proved it knows the token. A member without the CA key names
// one that has it, and Join asks that one, once. The identity holds
// the CA certificate but not its key. Errors wrap ErrTokenFormat,
// ErrNodeName, ErrBadToken, ErrTokenExpired, ErrTokenRevoked,
// ErrTokenUsedUp, ErrJoinRefused, ErrNoIssuer or ErrJoinProtocol.
func Join(ctx context.Context, addr, token, nodeName string, ips []net.IP) (*Identity, []byte, error) {
	return JoinWithKey(ctx, addr, token, nodeName, ips, nil)
}

// JoinWithKey is Join with the newcomer's key (nil: a fresh one). A
// newcomer that keeps its key across attempts is known as the same one
// by the member, which then spends no second use of the token on a
// retry after a lost reply.
func JoinWithKey(ctx context.Context, addr, token, nodeName string, ips []net.IP, key *ecdsa.PrivateKey) (*Identity, []byte, error) {
	if err := ValidToken(token); err != nil {
		return nil, nil, err
	}
	if err := ValidNodeName(nodeName); err != nil {
		return nil, nil, err
	}
	if key == nil {
		var err error
		if key, err = NewKey(); err != nil {
			return nil, nil, err
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, JoinTimeout)
		defer cancel()
	}
	id, blob, redirect, err := joinOnce(ctx, addr, token, nodeName, ips, key)
	if redirect == "" {
		return id, blob, err
	}
	id, blob, again, err := joinOnce(ctx, redirect, token, nodeName, ips, key)
	if again != "" {
		return nil, nil, fmt.Errorf("join %s: %w (it sent us to %s, which sent us to %s)", addr, ErrNoIssuer, redirect, again)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("join %s, sent on to %s: %w", addr, redirect, err)
	}
	return id, blob, nil
}

// joinOnce runs one exchange with the member at addr: the identity and
// blob it issued, or the member it sends us to, or an error.
func joinOnce(ctx context.Context, addr, token, nodeName string, ips []net.IP, key *ecdsa.PrivateKey) (*Identity, []byte, string, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, "", fmt.Errorf("join %s: %w", addr, err)
	}
	defer raw.Close()
	tc, err := clientHandshake(ctx, raw, joinClientConfig(), ProtoJoin)
	if err != nil {
		return nil, nil, "", fmt.Errorf("join %s: %w", addr, err)
	}
	// Deadlines, not ctx, bound the reads: make ctx's end a deadline.
	dl, _ := ctx.Deadline()
	_ = tc.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = tc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	reply, err := joinExchange(tc, token, nodeName, ips, key)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, ErrBadToken) {
			err = ctx.Err()
		}
		return nil, nil, "", fmt.Errorf("join %s: %w", addr, err)
	}
	if reply.Code == codeRedirect {
		if _, _, err := net.SplitHostPort(reply.Redirect); err != nil {
			return nil, nil, "", fmt.Errorf("join %s: %w: redirect to %q", addr, ErrJoinProtocol, reply.Redirect)
		}
		return nil, nil, reply.Redirect, nil
	}
	id, err := joinIdentity(&reply.joinReply, key, nodeName, tc.ConnectionState())
	if err != nil {
		return nil, nil, "", fmt.Errorf("join %s: %w", addr, err)
	}
	return id, reply.Blob, "", nil
}

// joinExchange runs the newcomer's side of the exchange (see the
// package doc) and returns the server's successful reply or redirect.
func joinExchange(tc *tls.Conn, token, nodeName string, ips []net.IP, key *ecdsa.PrivateKey) (*joinAnswer, error) {
	hash := TokenHash(token)
	pkey, _ := joinKey(hash)
	cs := tc.ConnectionState()
	ekm, err := cs.ExportKeyingMaterial(ekmLabel, nil, 32)
	if err != nil {
		return nil, fmt.Errorf("keying material: %w", err)
	}
	if err := writeFrame(tc, joinHello{V: joinVersion, ID: joinID(hash)}); err != nil {
		return nil, err
	}
	var ch joinChallenge
	if err := readFrame(tc, &ch); err != nil {
		return nil, fmt.Errorf("read challenge: %w", err)
	}
	if ch.Code == codeBadToken {
		return nil, fmt.Errorf("%w: the server does not know this token", ErrBadToken)
	}
	if !hmac.Equal(ch.Proof, proof(pkey, labelServer, ekm)) {
		return nil, fmt.Errorf("%w: the server failed to prove it knows the token", ErrBadToken)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	req := joinRequest{Proof: proof(pkey, labelClient, ekm), Name: nodeName, PublicKey: pub}
	for _, ip := range ips {
		req.IPs = append(req.IPs, ip.String())
	}
	if err := writeFrame(tc, req); err != nil {
		return nil, err
	}
	var reply joinAnswer
	if err := readFrame(tc, &reply); err != nil {
		return nil, fmt.Errorf("read reply: %w", err)
	}
	switch reply.Code {
	case "", codeRedirect:
		return &reply, nil
	case codeBadToken:
		return nil, fmt.Errorf("%w: the server refused our proof", ErrBadToken)
	case codeRefused:
		return nil, fmt.Errorf("%w: %s", ErrJoinRefused, reply.Error)
	}
	if err := refusalError(reply.Code); err != nil {
		// The server's text is the same sentence; the error is ours.
		return nil, err
	}
	return nil, fmt.Errorf("%w: server error %s: %s", ErrJoinProtocol, reply.Code, reply.Error)
}

// joinIdentity checks what the server sent, including that the server's
// own TLS certificate chains to the CA it sent: a member must answer.
func joinIdentity(r *joinReply, key *ecdsa.PrivateKey, nodeName string, cs tls.ConnectionState) (*Identity, error) {
	cert, err := x509.ParseCertificate(r.Cert)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate: %w", ErrJoinProtocol, err)
	}
	caCert, err := x509.ParseCertificate(r.CACert)
	if err != nil {
		return nil, fmt.Errorf("%w: ca certificate: %w", ErrJoinProtocol, err)
	}
	// The CA key stays with the members that issue certificates: one
	// that a member of an older version still sends is ignored.
	id := &Identity{Key: key, Cert: cert, CA: &CA{Cert: caCert}}
	if err := id.Check(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJoinProtocol, err)
	}
	if id.Name() != nodeName {
		return nil, fmt.Errorf("%w: certificate for %q, asked for %q", ErrJoinProtocol, id.Name(), nodeName)
	}
	if err := verifyServer(id.CA.Pool(), cs); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJoinProtocol, err)
	}
	return id, nil
}
