package transport

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Identity is what makes a machine a cluster member: its key and
// certificate, the cluster CA's certificate and, on voters only, the CA
// key. Key, Cert and CA are what the identity was made or loaded with;
// what changes while the agent runs (a renewed certificate, the CA key
// taken or given up, the revocation check) lives behind atomics, so
// that every TLS configuration built from the identity picks it up at
// its next handshake. An Identity is used by pointer and is safe for
// concurrent use.
type Identity struct {
	Key  *ecdsa.PrivateKey
	Cert *x509.Certificate // as made or loaded; Leaf is the live one
	CA   *CA               // CA.Key as made or loaded; Signer is the live one

	cert   atomic.Pointer[tls.Certificate] // nil: Key and Cert
	caKey  atomic.Pointer[caKeyBox]        // nil: CA.Key
	refuse atomic.Pointer[RefuseFunc]      // nil: refuse nothing more
}

// caKeyBox holds the CA key this node holds now; a nil Key means none.
type caKeyBox struct{ Key *ecdsa.PrivateKey }

// RefuseFunc decides whether a peer's verified certificate is refused
// all the same (revoked): a non-nil error fails the handshake. It is
// called during handshakes, so it must be quick and safe for
// concurrent use.
type RefuseFunc func(leaf *x509.Certificate) error

// NewIdentity generates a key for nodeName and issues its certificate
// with ca: how the first node, which created the CA, becomes a member.
func NewIdentity(ca *CA, nodeName string, ips []net.IP) (*Identity, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	cert, err := Issue(ca, nodeName, &key.PublicKey, ips)
	if err != nil {
		return nil, err
	}
	return &Identity{Key: key, Cert: cert, CA: ca}, nil
}

// Name is the node name the certificate was issued for; a renewal
// keeps it.
func (id *Identity) Name() string { return id.Cert.Subject.CommonName }

// Leaf is the node certificate in use now: the last one Renew swapped
// in, else Cert.
func (id *Identity) Leaf() *x509.Certificate {
	if c := id.cert.Load(); c != nil {
		return c.Leaf
	}
	return id.Cert
}

// Check verifies that the identity is consistent: the key matches the
// certificate, the CA key (if held) matches the CA certificate and the
// certificate chains to the CA now, for both server and client use.
func (id *Identity) Check() error {
	if id == nil || id.Key == nil || id.Cert == nil || id.CA == nil || id.CA.Cert == nil {
		return fmt.Errorf("%w: incomplete", ErrBadIdentity)
	}
	if err := id.checkLeaf(id.Leaf()); err != nil {
		return err
	}
	if s := id.Signer(); s != nil && !s.Key.PublicKey.Equal(id.CA.Cert.PublicKey) {
		return fmt.Errorf("%w: ca key does not match ca certificate", ErrBadIdentity)
	}
	return nil
}

// checkLeaf checks that cert can be this identity's certificate: same
// key, same name, chained to the CA now for both uses.
func (id *Identity) checkLeaf(cert *x509.Certificate) error {
	if !id.Key.PublicKey.Equal(cert.PublicKey) {
		return fmt.Errorf("%w: key does not match certificate", ErrBadIdentity)
	}
	if cert.Subject.CommonName != id.Cert.Subject.CommonName {
		return fmt.Errorf("%w: certificate for %q, not %q", ErrBadIdentity, cert.Subject.CommonName, id.Cert.Subject.CommonName)
	}
	if err := verifyLeaf(id.CA.Pool(), cert, nil, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth); err != nil {
		return fmt.Errorf("%w: %w", ErrBadIdentity, err)
	}
	return nil
}

// Renew swaps in cert, a renewal of the node certificate: same key and
// name, issued by the CA. Handshakes from now on present it; connections
// already open keep the one they were made with.
func (id *Identity) Renew(cert *x509.Certificate) error {
	if err := id.checkLeaf(cert); err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	id.cert.Store(&tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: id.Key, Leaf: cert})
	return nil
}

// Expires is when the live node certificate stops being valid; the
// agent renews it before then.
func (id *Identity) Expires() time.Time { return id.Leaf().NotAfter }

// Signer is the CA with its key if this node holds the key now (a
// voter), else nil: only a signer issues certificates.
func (id *Identity) Signer() *CA {
	key := id.CA.Key
	if b := id.caKey.Load(); b != nil {
		key = b.Key
	}
	if key == nil {
		return nil
	}
	return &CA{Cert: id.CA.Cert, Key: key}
}

// SetCAKey makes this node hold key, the CA's key (nil: give it up).
func (id *Identity) SetCAKey(key *ecdsa.PrivateKey) error {
	if key != nil && !key.PublicKey.Equal(id.CA.Cert.PublicKey) {
		return fmt.Errorf("%w: ca key does not match ca certificate", ErrBadIdentity)
	}
	id.caKey.Store(&caKeyBox{Key: key})
	return nil
}

// SetRefuse installs the check every handshake applies to a peer whose
// certificate chains to the CA (nil: none), on both sides: a Mux's
// server and every dialer built from this identity.
func (id *Identity) SetRefuse(f RefuseFunc) {
	if f == nil {
		id.refuse.Store(nil)
		return
	}
	id.refuse.Store(&f)
}

// Save writes the identity to dir (see the package doc for the files):
// the live certificate, and the CA key only if this node holds it. The
// node key is written last, so that HasIdentity never sees a half-saved
// identity after a crash.
func (id *Identity) Save(dir string) error {
	if err := id.Check(); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	// MkdirAll keeps the mode of an existing directory; keys need 0700.
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	if err := writeCert(filepath.Join(dir, CACertFile), id.CA.Cert); err != nil {
		return err
	}
	if s := id.Signer(); s != nil {
		if err := writeKey(filepath.Join(dir, CAKeyFile), s.Key); err != nil {
			return err
		}
	}
	if err := writeCert(filepath.Join(dir, NodeCertFile), id.Leaf()); err != nil {
		return err
	}
	return writeKey(filepath.Join(dir, NodeKeyFile), id.Key)
}

// SaveCert replaces the node certificate in dir with the live one, in
// one rename: the key does not change when a certificate is renewed, so
// a crash leaves the old certificate or the new one, both matching it.
func (id *Identity) SaveCert(dir string) error {
	return writeCert(filepath.Join(dir, NodeCertFile), id.Leaf())
}

// LoadIdentity reads the identity saved in dir and checks it; the CA
// key is read if the directory holds it (a voter's). A missing file
// gives ErrNoIdentity, anything inconsistent ErrBadIdentity.
func LoadIdentity(dir string) (*Identity, error) {
	caCert, err := readCert(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	caKey, err := readKey(filepath.Join(dir, CAKeyFile))
	if errors.Is(err, ErrNoIdentity) {
		caKey, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	cert, err := readCert(filepath.Join(dir, NodeCertFile))
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	key, err := readKey(filepath.Join(dir, NodeKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	if !caCert.IsCA {
		return nil, fmt.Errorf("load identity %s: %w: %s is not a ca certificate", dir, ErrBadIdentity, CACertFile)
	}
	id := &Identity{Key: key, Cert: cert, CA: &CA{Cert: caCert, Key: caKey}}
	if err := id.Check(); err != nil {
		if time.Now().After(cert.NotAfter) {
			// A certificate renews itself only while its agent runs, and
			// peers refuse an expired one: the node must join again.
			return nil, fmt.Errorf("load identity %s: the node certificate expired at %v; "+
				"remove %s and start the agent with a join token to join again: %w",
				dir, cert.NotAfter.Format(time.RFC3339), dir, err)
		}
		return nil, fmt.Errorf("load identity %s: %w", dir, err)
	}
	return id, nil
}

// HasIdentity reports whether dir holds the files of an identity (the
// CA key is not one of them: only voters hold it); it does not parse
// them (LoadIdentity does).
func HasIdentity(dir string) bool {
	for _, f := range []string{CACertFile, NodeCertFile, NodeKeyFile} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || !st.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// tlsCertificate is the certificate handshakes present now.
func (id *Identity) tlsCertificate() *tls.Certificate {
	if c := id.cert.Load(); c != nil {
		return c
	}
	c := &tls.Certificate{Certificate: [][]byte{id.Cert.Raw}, PrivateKey: id.Key, Leaf: id.Cert}
	// Cache it unless a renewal got there first.
	id.cert.CompareAndSwap(nil, c)
	return id.cert.Load()
}

// ClusterID is the id of the cluster whose CA issued the identity; ""
// without one (nil before the node has an identity).
func (id *Identity) ClusterID() string {
	if id == nil || id.CA == nil || id.CA.Cert == nil {
		return ""
	}
	return id.CA.ClusterID()
}
