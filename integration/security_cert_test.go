package integration

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ssi/cluster/transport"
)

// The certificate dialer: this test binary again, run inside a node,
// presenting the certificate of a directory (node.crt, node.key, ca.crt;
// not checked, it may be forged) on a node's cluster port. Chosen by
// SSI_ITEST_CERTDIAL.
func init() {
	if os.Getenv("SSI_ITEST_CERTDIAL") != "" {
		os.Exit(certDialMain(os.Args[1:]))
	}
}

// Exit codes of certDialMain.
const (
	certAnswered = 0 // the node served an HTTP request over the connection
	certRefused  = 3 // the handshake or the request failed: refused
	certSilent   = 4 // no answer within the deadline
)

// certDialMain: ADDR DIR. It dials ADDR's ProtoRPC with transport.Dial
// and the identity in DIR, sends one HTTP request and says how it went.
func certDialMain(args []string) int {
	id, err := readIdentityFiles(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "certdial:", err)
		return 2
	}
	addr := args[0]
	conn, err := transport.DialTimeout(addr, transport.ProtoRPC, id, 5*time.Second)
	if err != nil {
		fmt.Println("refused at the handshake:", err)
		return certRefused
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/v1/certdial", nil)
	err = req.Write(conn)
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(bufio.NewReader(conn), req)
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		fmt.Println("no answer:", err)
		return certSilent
	case err != nil:
		fmt.Println("refused:", err)
		return certRefused
	}
	fmt.Println("answered:", resp.Status)
	return certAnswered
}

// readIdentityFiles reads an identity's files without checking them.
func readIdentityFiles(dir string) (*transport.Identity, error) {
	ca, err := readCertFile(filepath.Join(dir, transport.CACertFile))
	if err != nil {
		return nil, err
	}
	cert, err := readCertFile(filepath.Join(dir, transport.NodeCertFile))
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, transport.NodeKeyFile))
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no pem", dir)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: key %T", dir, k)
	}
	return &transport.Identity{Key: key, Cert: cert, CA: &transport.CA{Cert: ca}}, nil
}

func readCertFile(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no pem", path)
	}
	return x509.ParseCertificate(blk.Bytes)
}

// certLab is the lab of TestCertificates.
type certLab struct {
	*clusterLab
	addr map[string]string // node -> cluster address
}

// tlsDir is node's identity directory, seen from the host.
func (c *certLab) tlsDir(node string) string {
	return filepath.Join("/var/lib/ssi-lab", c.name, node, "data", "tls")
}

// nodeCert is node's certificate as it is on disk now.
func (c *certLab) nodeCert(t *testing.T, node string) *x509.Certificate {
	t.Helper()
	cert, err := readCertFile(filepath.Join(c.tlsDir(node), transport.NodeCertFile))
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// copyIdentity copies node's identity files (not the CA key) to a new
// directory the lab's nodes see.
func (c *certLab) copyIdentity(t *testing.T, node string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{transport.CACertFile, transport.NodeCertFile, transport.NodeKeyFile} {
		b, err := os.ReadFile(filepath.Join(c.tlsDir(node), f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// dial runs the certificate dialer in node `from` against node `to`
// with the identity in dir, and returns its exit code.
func (c *certLab) dial(t *testing.T, from, to, dir string) int {
	t.Helper()
	r := c.ssi("exec", from, "--", "env", "SSI_ITEST_CERTDIAL=1", testBin, c.addr[to], dir)
	if r.code != certAnswered && r.code != certRefused && r.code != certSilent {
		t.Fatalf("certdial %s -> %s: exit %d: %s%s", from, to, r.code, r.out, r.err)
	}
	t.Logf("certdial %s -> %s with %s: %s", from, to, filepath.Base(dir), strings.TrimSpace(r.out))
	return r.code
}

// logHas reports whether node's agent log has a line with all of parts.
func (c *certLab) logHas(node string, parts ...string) bool {
	b, _ := os.ReadFile(filepath.Join("/var/lib/ssi-lab", c.name, node, "agent.log"))
	for _, line := range strings.Split(string(b), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// TestCertificates (issue 12): only voters hold the CA key; a
// certificate a node minted with its own key is refused; certificates
// of 20 s renew under a migration loop without failing a move; a
// removed node's certificate is refused everywhere within 5 s.
func TestCertificates(t *testing.T) {
	c := &certLab{clusterLab: newClusterLabEnv(t, "itseccrt", []string{"SSI_LAB_SUBNET=10.213.83.0/24",
		// Agents inherit the lab's environment.
		"SSI_CLUSTER_REMOVE_AFTER=5s", "SSI_CLUSTER_CERT_LIFETIME=20s"}, "--nodes", "4")}
	four := []string{"node1", "node2", "node3", "node4"}
	ns := c.agree("node2", four, 20*time.Second)
	if !ns[0].Voter || !ns[1].Voter || !ns[2].Voter || ns[3].Voter {
		t.Fatalf("want node1-3 voters and node4 not: %+v", ns)
	}
	c.addr = map[string]string{}
	for _, n := range ns {
		c.addr[n.Name] = n.Addr
	}

	t.Run("only voters hold the ca key", func(t *testing.T) { testCertCAKey(t, c) })
	t.Run("a certificate node4 signed for node2 is refused", func(t *testing.T) { testCertForged(t, c) })
	t.Run("renewals under a migration loop", func(t *testing.T) { testCertRenewals(t, c) })
	t.Run("a removed node's certificate is refused everywhere", func(t *testing.T) { testCertRemoved(t, c) })
}

// testCertCAKey: node4's data directory holds no CA key; the voters'
// hold it, readable by root only.
func testCertCAKey(t *testing.T, c *certLab) {
	hasKey := func(node string) (bool, os.FileMode) {
		st, err := os.Stat(filepath.Join(c.tlsDir(node), transport.CAKeyFile))
		if err != nil {
			return false, 0
		}
		return true, st.Mode().Perm()
	}
	eventually(t, "the voters to hold the ca key and node4 not", 20*time.Second, func() bool {
		has4, _ := hasKey("node4")
		ok := !has4
		for _, n := range three {
			has, _ := hasKey(n)
			ok = ok && has
		}
		return ok
	})
	for _, n := range three {
		if _, mode := hasKey(n); mode != 0o600 {
			t.Fatalf("%s's ca key has mode %v", n, mode)
		}
	}
}

// testCertForged: node4's own certificate is served by node1; one for
// "node2" that node4 signed with its node key, node4's certificate as
// issuer, is refused.
func testCertForged(t *testing.T, c *certLab) {
	own := c.copyIdentity(t, "node4")
	if code := c.dial(t, "node4", "node1", own); code != certAnswered {
		t.Fatalf("node4's own certificate: exit %d, want an answer", code)
	}
	signer, err := readIdentityFiles(own)
	if err != nil {
		t.Fatal(err)
	}
	key, err := transport.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "node2", Organization: []string{"ssi"}},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{"node2"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer.Cert, &key.PublicKey, signer.Key)
	if err != nil {
		t.Fatal(err)
	}
	forged := t.TempDir()
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	caPEM, _ := os.ReadFile(filepath.Join(own, transport.CACertFile))
	for f, b := range map[string][]byte{
		transport.CACertFile:   caPEM,
		transport.NodeCertFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		transport.NodeKeyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(filepath.Join(forged, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if code := c.dial(t, "node4", "node1", forged); code != certRefused {
		t.Fatalf("a certificate for node2 signed by node4: exit %d, want refused", code)
	}
	// Refused for its chain: node4's certificate is no CA's.
	eventually(t, "node1 to log why", 5*time.Second, func() bool {
		return c.logHas("node1", "refused", "certificate signed by unknown authority")
	})
}

// testCertRenewals moves a counter between node2 and node3 until every
// node renewed its certificate twice; every move succeeds and the
// counter counts on, in order.
func testCertRenewals(t *testing.T, c *certLab) {
	m := &migLab{clusterLab: c.with(t), dir: t.TempDir()}
	counter := m.counter(t, "certloop.sh", "/cluster/home/certloop.txt")
	cpid := m.runDetached(t, "node2", counter)
	n := m.waitGrows(t, "node2", "certloop.txt", 2)

	last, renewed := map[string]string{}, map[string]int{}
	for _, node := range append(three, "node4") {
		last[node] = transport.Serial(c.nodeCert(t, node))
	}
	done := func() bool {
		all := true
		for node := range last {
			if s := transport.Serial(c.nodeCert(t, node)); s != last[node] {
				last[node] = s
				renewed[node]++
			}
			all = all && renewed[node] >= 2
		}
		return all
	}
	deadline := time.Now().Add(2 * time.Minute)
	at, moves := "node2", 0
	for !done() || moves < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("after %d moves, renewals seen per node: %v", moves, renewed)
		}
		to := map[string]string{"node2": "node3", "node3": "node2"}[at]
		// Root asks on the process's home: another node's root may not
		// move root's processes.
		r := c.ssi("exec", "node2", "--", ssiBin, "migrate", cpid, to)
		if r.code != 0 {
			t.Fatalf("move %d of %s to %s failed (renewals so far %v): exit %d: %s", moves+1, cpid, to, renewed, r.code, r.err)
		}
		at = to
		moves++
	}
	t.Logf("%d moves across the renewals %v", moves, renewed)
	for node := range last {
		if c.logHas(node, "renewing the node certificate failed") {
			t.Errorf("%s failed a renewal", node)
		}
	}
	m.waitGrows(t, at, "certloop.txt", n+3)
	c.must("exec", "node2", "--", ssiBin, "kill", "-s", "KILL", cpid)
}

// testCertRemoved: node4 is killed right after a renewal and removed;
// its certificate, accepted until then, is refused by every remaining
// node within 5 s of the removal showing in `ssi nodes`, well before
// it expires; a member's certificate is still served.
func testCertRemoved(t *testing.T, c *certLab) {
	before := transport.Serial(c.nodeCert(t, "node4"))
	eventually(t, "node4 to renew its certificate", 30*time.Second, func() bool {
		return transport.Serial(c.nodeCert(t, "node4")) != before
	})
	c.must("kill", "node4")
	dir := c.copyIdentity(t, "node4")
	cert := c.nodeCert(t, "node4")
	if code := c.dial(t, "node4", "node1", dir); code != certAnswered {
		t.Fatalf("node4's certificate before its removal: exit %d, want an answer", code)
	}

	var removed time.Time
	eventually(t, "node4 to be removed", 40*time.Second, func() bool {
		ns, ok := c.nodes("node1")
		if !ok {
			return false
		}
		for _, n := range ns {
			if n.Name == "node4" {
				return false
			}
		}
		removed = time.Now()
		return true
	})
	refused := map[string]bool{}
	for len(refused) < len(three) {
		if time.Since(removed) > 5*time.Second {
			t.Fatalf("5 s after node4's removal, only %v refuse its certificate", refused)
		}
		for _, n := range three {
			if !refused[n] && c.dial(t, "node4", n, dir) == certRefused {
				refused[n] = true
			}
		}
	}
	// Refused for the revocation, not for anything else.
	for _, n := range three {
		eventually(t, n+" to log the revoked certificate", 5*time.Second, func() bool {
			return c.logHas(n, "refused", "node4", transport.ErrRevoked.Error())
		})
	}
	if time.Now().After(cert.NotAfter) {
		t.Fatalf("node4's certificate expired (%v) before the test saw it refused: no proof of revocation", cert.NotAfter)
	}
	if code := c.dial(t, "node3", "node1", c.copyIdentity(t, "node3")); code != certAnswered {
		t.Fatalf("node3's certificate after node4's removal: exit %d, want an answer", code)
	}
}
