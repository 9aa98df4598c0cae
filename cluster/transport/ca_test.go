package transport

import (
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCAAndIssue(t *testing.T) {
	ca := testCA(t)
	if !ca.Cert.IsCA || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Fatal("ca certificate cannot sign certificates")
	}
	if ca.ClusterID() != "test-cluster" {
		t.Errorf("cluster id %q", ca.ClusterID())
	}
	if life := ca.Cert.NotAfter.Sub(time.Now()); life < 9*365*24*time.Hour {
		t.Errorf("ca valid for %v only", life)
	}
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	ips := []net.IP{net.ParseIP("10.0.0.7"), net.ParseIP("fd00::7")}
	cert, err := Issue(ca, "node7", &key.PublicKey, ips)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "node7" || len(cert.DNSNames) != 1 || cert.DNSNames[0] != "node7" {
		t.Errorf("names %q %q", cert.Subject.CommonName, cert.DNSNames)
	}
	if len(cert.IPAddresses) != 2 || !cert.IPAddresses[1].Equal(ips[1]) {
		t.Errorf("ips %v", cert.IPAddresses)
	}
	if life := cert.NotAfter.Sub(time.Now()); life < NodeValidity-time.Minute || life > NodeValidity {
		t.Errorf("node certificate valid for %v", life)
	}
	if got := IssuedAt(cert); time.Since(got).Abs() > time.Minute {
		t.Errorf("issued at %v, not now", got)
	}
	short, err := IssueFor(ca, "node7", &key.PublicKey, ips, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if life := short.NotAfter.Sub(IssuedAt(short)); life < 19*time.Second || life > 21*time.Second {
		t.Errorf("a 20 s certificate lives %v from its issue", life)
	}
	if Serial(short) != short.SerialNumber.Text(16) || Serial(short) == Serial(cert) {
		t.Errorf("serial %q", Serial(short))
	}
	if err := verifyLeaf(ca.Pool(), cert, nil, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("node certificate not usable both ways: %v", err)
	}
	other, err := Issue(ca, "node7", &key.PublicKey, ips)
	if err != nil {
		t.Fatal(err)
	}
	if other.SerialNumber.Cmp(cert.SerialNumber) == 0 {
		t.Error("two certificates with one serial")
	}
	if _, err := Issue(ca, "bad name", &key.PublicKey, nil); !errors.Is(err, ErrNodeName) {
		t.Errorf("bad name: %v", err)
	}
	if _, err := Issue(&CA{Cert: ca.Cert}, "n", &key.PublicKey, nil); err == nil {
		t.Error("issued without a ca key")
	}
}

func TestValidNodeName(t *testing.T) {
	for _, ok := range []string{"n1", "node-7", "host.example.org", "a", "x_y"} {
		if err := ValidNodeName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	long := string(make([]byte, MaxNodeName+1))
	for _, bad := range []string{"", "-n", "n-", ".n", "a b", "n/1", "é", long, "n\x00"} {
		if err := ValidNodeName(bad); !errors.Is(err, ErrNodeName) {
			t.Errorf("%q accepted: %v", bad, err)
		}
	}
}

func TestIdentitySaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	if HasIdentity(dir) {
		t.Fatal("identity in an empty directory")
	}
	if _, err := LoadIdentity(dir); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("load from empty dir: %v", err)
	}
	ca := testCA(t)
	id := testNode(t, ca, "n1")
	if err := id.Save(dir); err != nil {
		t.Fatal(err)
	}
	if !HasIdentity(dir) {
		t.Fatal("saved identity not found")
	}
	for _, f := range []string{CAKeyFile, NodeKeyFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", f, st.Mode().Perm())
		}
	}
	got, err := LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name() != "n1" || !got.Cert.Equal(id.Cert) || !got.Key.Equal(id.Key) ||
		!got.CA.Cert.Equal(ca.Cert) || !got.Signer().Key.Equal(ca.Key) {
		t.Fatal("loaded identity differs from the saved one")
	}

	// A node certificate from another CA next to this CA is refused.
	stranger := testNode(t, testCA(t), "n1")
	if err := writeCert(filepath.Join(dir, NodeCertFile), stranger.Cert); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadIdentity(dir); !errors.Is(err, ErrBadIdentity) {
		t.Fatalf("mismatched identity loaded: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, CACertFile), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(dir); !errors.Is(err, ErrBadIdentity) {
		t.Fatalf("junk ca loaded: %v", err)
	}
}

// A non-voter's directory holds no CA key: still an identity, one that
// cannot sign, and saving it writes no key.
func TestIdentityWithoutCAKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	if err := testNode(t, testCA(t), "n1").Save(dir); err != nil {
		t.Fatal(err)
	}
	if err := RemoveCAKey(dir); err != nil || RemoveCAKey(dir) != nil {
		t.Fatalf("remove ca key: %v", err)
	}
	if !HasIdentity(dir) {
		t.Fatal("an identity without the ca key is not found")
	}
	nokey, err := LoadIdentity(dir)
	if err != nil || nokey.Signer() != nil {
		t.Fatalf("loaded without the ca key: %v, signer %v", err, nokey.Signer())
	}
	if err := nokey.Save(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("saving an identity without the ca key wrote one: %v", err)
	}

}

func TestSaveLoadCA(t *testing.T) {
	dir := t.TempDir()
	ca := testCA(t)
	if err := SaveCA(dir, ca); err != nil {
		t.Fatal(err)
	}
	got, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Cert.Equal(ca.Cert) || !got.Key.Equal(ca.Key) {
		t.Fatal("loaded ca differs")
	}
}

// An expired node certificate is refused at load with what to do.
func TestLoadExpiredIdentity(t *testing.T) {
	dir := t.TempDir()
	ca := testCA(t)
	id := testNode(t, ca, "n1")
	if err := id.Save(dir); err != nil {
		t.Fatal(err)
	}
	tmpl := *id.Cert
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca.Cert, &id.Key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	expired, _ := x509.ParseCertificate(der)
	if err := writeCert(filepath.Join(dir, NodeCertFile), expired); err != nil {
		t.Fatal(err)
	}
	_, err = LoadIdentity(dir)
	if !errors.Is(err, ErrBadIdentity) || !strings.Contains(err.Error(), "expired") || !strings.Contains(err.Error(), "join token") {
		t.Fatalf("loading an expired certificate: %v", err)
	}
}
