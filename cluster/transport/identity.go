package transport

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Identity is what makes a machine a cluster member: its key and
// certificate, and the cluster CA's certificate and key. Every member
// holds the CA key so that any member can admit a newcomer.
type Identity struct {
	Key  *ecdsa.PrivateKey
	Cert *x509.Certificate
	CA   *CA
}

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

// Name is the node name the certificate was issued for.
func (id *Identity) Name() string { return id.Cert.Subject.CommonName }

// Check verifies that the identity is consistent: the key matches the
// certificate, the CA key matches the CA certificate and the certificate
// chains to the CA now, for both server and client use.
func (id *Identity) Check() error {
	if id == nil || id.Key == nil || id.Cert == nil || id.CA == nil || id.CA.Cert == nil {
		return fmt.Errorf("%w: incomplete", ErrBadIdentity)
	}
	if !id.Key.PublicKey.Equal(id.Cert.PublicKey) {
		return fmt.Errorf("%w: key does not match certificate", ErrBadIdentity)
	}
	if id.CA.Key != nil && !id.CA.Key.PublicKey.Equal(id.CA.Cert.PublicKey) {
		return fmt.Errorf("%w: ca key does not match ca certificate", ErrBadIdentity)
	}
	if err := verifyLeaf(id.CA.Pool(), id.Cert, nil, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth); err != nil {
		return fmt.Errorf("%w: %w", ErrBadIdentity, err)
	}
	return nil
}

// Expires is when the node certificate stops being valid; the agent
// must renew it (re-issue with the CA key) before then.
func (id *Identity) Expires() time.Time { return id.Cert.NotAfter }

// Save writes the identity to dir (see the package doc for the files).
// The node key is written last, so that HasIdentity, which needs all
// four files, never sees a half-saved identity after a crash.
func (id *Identity) Save(dir string) error {
	if err := id.Check(); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	if id.CA.Key == nil {
		return fmt.Errorf("save identity: %w: no ca key", ErrBadIdentity)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	// MkdirAll keeps the mode of an existing directory; keys need 0700.
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	if err := SaveCA(dir, id.CA); err != nil {
		return err
	}
	if err := writeCert(filepath.Join(dir, NodeCertFile), id.Cert); err != nil {
		return err
	}
	return writeKey(filepath.Join(dir, NodeKeyFile), id.Key)
}

// LoadIdentity reads the identity saved in dir and checks it. A missing
// file gives ErrNoIdentity, anything inconsistent ErrBadIdentity.
func LoadIdentity(dir string) (*Identity, error) {
	ca, err := LoadCA(dir)
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
	id := &Identity{Key: key, Cert: cert, CA: ca}
	if err := id.Check(); err != nil {
		return nil, fmt.Errorf("load identity %s: %w", dir, err)
	}
	return id, nil
}

// HasIdentity reports whether dir holds all the files of an identity;
// it does not parse them (LoadIdentity does).
func HasIdentity(dir string) bool {
	for _, f := range []string{CACertFile, CAKeyFile, NodeCertFile, NodeKeyFile} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || !st.Mode().IsRegular() {
			return false
		}
	}
	return true
}

func (id *Identity) tlsCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{id.Cert.Raw}, PrivateKey: id.Key, Leaf: id.Cert}
}

// ClusterID is the id of the cluster whose CA issued the identity; ""
// without one (nil before the node has an identity).
func (id *Identity) ClusterID() string {
	if id == nil || id.CA == nil || id.CA.Cert == nil {
		return ""
	}
	return id.CA.ClusterID()
}
