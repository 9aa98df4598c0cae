package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
)

// serverConfig accepts clients with or without a certificate, because a
// newcomer on ProtoJoin has none yet; a certificate that is given must
// chain to the cluster CA, and the Mux refuses the other protocols to
// clients without one.
func serverConfig(id *Identity) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.tlsCertificate()},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    id.CA.Pool(),
		// Resumed sessions would carry an old verification forward;
		// connections are long-lived, so a full handshake costs little.
		SessionTicketsDisabled: true,
	}
}

// clientConfig presents the node certificate and trusts a server whose
// chain leads to the cluster CA. Nodes are dialed by IP and addresses
// change, so the host name is not checked: the standard verification is
// switched off and replaced by verifyServer, never skipped.
func clientConfig(id *Identity) *tls.Config {
	pool := id.CA.Pool()
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{id.tlsCertificate()},
		InsecureSkipVerify: true, // verifyServer below checks the chain
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyServer(pool, cs)
		},
	}
}

// joinClientConfig is for a newcomer, which knows no CA yet: the server
// certificate is not trusted here at all, the join handshake proves the
// server knows the token over this very session (see the package doc).
func joinClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // authenticated by the token proof
	}
}

func verifyServer(pool *x509.CertPool, cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("%w: server sent no certificate", ErrUntrusted)
	}
	if err := verifyLeaf(pool, cs.PeerCertificates[0], cs.PeerCertificates[1:], x509.ExtKeyUsageServerAuth); err != nil {
		return fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	return nil
}

// verifyLeaf checks that leaf chains to roots for every one of usages
// (x509 accepts any one of several usages, so each is checked alone).
func verifyLeaf(roots *x509.CertPool, leaf *x509.Certificate, inter []*x509.Certificate, usages ...x509.ExtKeyUsage) error {
	ipool := x509.NewCertPool()
	for _, c := range inter {
		ipool.AddCert(c)
	}
	for _, u := range usages {
		opts := x509.VerifyOptions{Roots: roots, Intermediates: ipool, KeyUsages: []x509.ExtKeyUsage{u}}
		if _, err := leaf.Verify(opts); err != nil {
			return err
		}
	}
	return nil
}

// PeerName is the node name in the certificate of c's peer, or "" if c
// is not TLS or the peer sent no certificate. It does not verify: it is
// meant for connections from a Mux listener or from Dial, whose peer
// chains were verified against the cluster CA during the handshake. A
// certificate outlives membership (there is no revocation list), so
// callers authorising a request also check the name against the current
// members.
func PeerName(c net.Conn) string {
	s, ok := c.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return ""
	}
	cs := s.ConnectionState()
	if len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0 {
		return cs.VerifiedChains[0][0].Subject.CommonName
	}
	if len(cs.PeerCertificates) > 0 {
		return cs.PeerCertificates[0].Subject.CommonName
	}
	return ""
}

// isTimeout reports whether err is a deadline or timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
