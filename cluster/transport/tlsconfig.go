package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
)

// ErrRevoked means a peer's certificate chains to the cluster CA but was
// refused all the same: revoked in the agreed state (Identity.SetRefuse).
var ErrRevoked = errors.New("peer certificate revoked")

// serverConfig accepts clients with or without a certificate, because a
// newcomer on ProtoJoin has none yet; a certificate that is given must
// chain to the cluster CA, name a node and pass the identity's refuse
// check, and the Mux refuses the other protocols to clients without
// one. The certificate presented is read at each handshake, so a
// renewal needs no new configuration.
func serverConfig(id *Identity) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return id.tlsCertificate(), nil
		},
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  id.CA.Pool(),
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // a newcomer: only ProtoJoin will serve it
			}
			return id.checkPeer(cs.PeerCertificates[0])
		},
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
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return id.tlsCertificate(), nil
		},
		InsecureSkipVerify: true, // verifyServer below checks the chain
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := verifyServer(pool, cs); err != nil {
				return err
			}
			return id.checkPeer(cs.PeerCertificates[0])
		},
	}
}

// checkPeer is what a chained peer certificate must pass besides the
// chain, on both sides: its name is a node name (it is who the peer is,
// PeerName) and the identity's refuse check lets it through.
func (id *Identity) checkPeer(leaf *x509.Certificate) error {
	if err := ValidNodeName(leaf.Subject.CommonName); err != nil {
		return fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	if f := id.refuse.Load(); f != nil {
		if err := (*f)(leaf); err != nil {
			return fmt.Errorf("%s (serial %s): %w", leaf.Subject.CommonName, Serial(leaf), err)
		}
	}
	return nil
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
// is not TLS or the peer sent no certificate. It is meant for
// connections from a Mux listener or from Dial, whose handshake checked
// the peer's chain to the cluster CA, that its name is a node name and
// that it is not revoked (a server's VerifiedChains, a dialer's
// VerifyConnection); a revoked certificate's live connections are
// closed when the revocation is learnt (Mux.Drop). Callers authorising a
// request still check the name against the current members: only the
// certificates the agreed state recorded are revoked with their node.
func PeerName(c net.Conn) string {
	if leaf := PeerLeaf(c); leaf != nil && ValidNodeName(leaf.Subject.CommonName) == nil {
		return leaf.Subject.CommonName
	}
	return ""
}

// PeerLeaf is the certificate c's peer presented (see PeerName), or nil.
func PeerLeaf(c net.Conn) *x509.Certificate {
	s, ok := c.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return nil
	}
	cs := s.ConnectionState()
	if len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0 {
		return cs.VerifiedChains[0][0]
	}
	if len(cs.PeerCertificates) > 0 {
		return cs.PeerCertificates[0]
	}
	return nil
}

// isTimeout reports whether err is a deadline or timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
