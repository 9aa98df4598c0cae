package transport

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// Validity periods. The CA outlives any plausible cluster; node
// certificates are short enough that a stolen one does not last long,
// and renew themselves (NodeValidity is the default of IssueFor's
// lifetime, the agent's cluster.cert_lifetime).
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	NodeValidity = 30 * 24 * time.Hour
)

// clockSkew backdates certificates so that a member whose clock runs a
// little behind the issuer's accepts them at once.
const clockSkew = time.Hour

// MaxNodeName bounds a node name, as discovery beacons do.
const MaxNodeName = 64

// caNamePrefix starts the CommonName of a CA, followed by the cluster
// id; ClusterID reads it back, so the format must not change.
const caNamePrefix = "ssi cluster ca "

// CA is a cluster certificate authority: its certificate and key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA creates a self-signed ECDSA P-256 cluster CA for clusterID.
func NewCA(clusterID string) (*CA, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: caNamePrefix + clusterID, Organization: []string{"ssi"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// Members sign node certificates only, never sub-CAs.
		MaxPathLen:     0,
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse ca certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// NewKey generates an ECDSA P-256 key, the only key type of the cluster.
func NewKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return key, nil
}

// Issue signs a node certificate for nodeName and pub with ca, valid for
// NodeValidity: IssueFor with the default lifetime.
func Issue(ca *CA, nodeName string, pub crypto.PublicKey, ips []net.IP) (*x509.Certificate, error) {
	return IssueFor(ca, nodeName, pub, ips, NodeValidity)
}

// IssueFor signs a node certificate for nodeName and pub with ca, valid
// from now for lifetime (never past the CA's own end). The certificate
// serves both as TLS server and client, since every node both accepts
// and dials; its CommonName and DNS name are nodeName and its IP
// addresses are ips.
func IssueFor(ca *CA, nodeName string, pub crypto.PublicKey, ips []net.IP, lifetime time.Duration) (*x509.Certificate, error) {
	if lifetime <= 0 {
		return nil, fmt.Errorf("issue %q: lifetime %v", nodeName, lifetime)
	}
	if ca == nil || ca.Key == nil || ca.Cert == nil {
		return nil, fmt.Errorf("issue %q: %w: no ca key", nodeName, ErrBadIdentity)
	}
	if err := ValidNodeName(nodeName); err != nil {
		return nil, err
	}
	if _, ok := pub.(*ecdsa.PublicKey); !ok {
		return nil, fmt.Errorf("issue %q: public key %T is not ecdsa", nodeName, pub)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(lifetime)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: nodeName, Organization: []string{"ssi"}},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{nodeName},
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue %q: %w", nodeName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issue %q: parse: %w", nodeName, err)
	}
	return cert, nil
}

// ValidNodeName reports whether name can name a node. The name becomes
// a DNS name in certificates and may be a host name, so it is letters,
// digits, '.', '-' and '_', starting and ending with a letter or digit,
// at most MaxNodeName bytes.
func ValidNodeName(name string) error {
	if name == "" || len(name) > MaxNodeName {
		return fmt.Errorf("%w %q: length must be 1..%d", ErrNodeName, name, MaxNodeName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		inner := (c == '.' || c == '-' || c == '_') && i > 0 && i < len(name)-1
		if !alnum && !inner {
			return fmt.Errorf("%w %q: use letters, digits and inner '.', '-', '_'", ErrNodeName, name)
		}
	}
	return nil
}

// randomSerial returns a 128-bit random serial number, as CAs must not
// issue predictable serials.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, fmt.Errorf("serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// Serial names a certificate in the agreed state (raftstore.CertIssue,
// CertRevoke): its serial number in lower-case hex.
func Serial(cert *x509.Certificate) string { return cert.SerialNumber.Text(16) }

// IssuedAt is when a node certificate was issued: certificates are
// backdated by a fixed skew (see clockSkew), so their life, for
// renewing them on time, starts that much after NotBefore.
func IssuedAt(cert *x509.Certificate) time.Time {
	if t := cert.NotBefore.Add(clockSkew); t.Before(cert.NotAfter) {
		return t
	}
	return cert.NotBefore
}

// ClusterID is the cluster id the CA was created with (NewCA).
func (ca *CA) ClusterID() string {
	return strings.TrimPrefix(ca.Cert.Subject.CommonName, caNamePrefix)
}

// Pool returns a pool holding only the CA certificate, the root of every
// verification in the cluster.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}
