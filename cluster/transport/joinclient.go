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
// server proved it knows the token. Errors wrap ErrTokenFormat,
// ErrNodeName, ErrBadToken, ErrJoinRefused or ErrJoinProtocol.
func Join(ctx context.Context, addr, token, nodeName string, ips []net.IP) (*Identity, []byte, error) {
	if err := ValidToken(token); err != nil {
		return nil, nil, err
	}
	if err := ValidNodeName(nodeName); err != nil {
		return nil, nil, err
	}
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, JoinTimeout)
		defer cancel()
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("join %s: %w", addr, err)
	}
	defer raw.Close()
	tc, err := clientHandshake(ctx, raw, joinClientConfig(), ProtoJoin)
	if err != nil {
		return nil, nil, fmt.Errorf("join %s: %w", addr, err)
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
		return nil, nil, fmt.Errorf("join %s: %w", addr, err)
	}
	id, err := joinIdentity(reply, key, nodeName, tc.ConnectionState())
	if err != nil {
		return nil, nil, fmt.Errorf("join %s: %w", addr, err)
	}
	return id, reply.Blob, nil
}

// joinExchange runs the newcomer's side of the exchange (see the
// package doc) and returns the server's successful reply.
func joinExchange(tc *tls.Conn, token, nodeName string, ips []net.IP, key *ecdsa.PrivateKey) (*joinReply, error) {
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
	var reply joinReply
	if err := readFrame(tc, &reply); err != nil {
		return nil, fmt.Errorf("read reply: %w", err)
	}
	switch reply.Code {
	case "":
		return &reply, nil
	case codeBadToken:
		return nil, fmt.Errorf("%w: the server refused our proof", ErrBadToken)
	case codeRefused:
		return nil, fmt.Errorf("%w: %s", ErrJoinRefused, reply.Error)
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
	caKey, err := parseKey(r.CAKey, "ca key")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJoinProtocol, err)
	}
	id := &Identity{Key: key, Cert: cert, CA: &CA{Cert: caCert, Key: caKey}}
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
