package raftstore

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// Cert is a node certificate the cluster issued, known by its serial, so
// that it can be refused once its node is removed.
type Cert struct {
	Serial   string    `json:"serial"` // hex
	Node     string    `json:"node"`
	NotAfter time.Time `json:"not_after"`
	Revoked  bool      `json:"revoked,omitempty"`
}

// CertIssue records a certificate issued to Node at At. Records of
// certificates that expired before At are dropped: an expired
// certificate is refused anyway, so the list stays as short as the live
// certificates.
type CertIssue struct {
	Serial   string    `json:"serial"`
	Node     string    `json:"node"`
	NotAfter time.Time `json:"not_after"`
	At       time.Time `json:"at"`
}

// CertRevoke revokes one certificate by its serial. Removing a node
// (NodeRemove) revokes all of its certificates in the same step.
type CertRevoke struct {
	Serial string `json:"serial"`
	// NotAfter of a certificate the cluster has no record of, so the
	// revocation can be forgotten once it expires; zero: never.
	NotAfter time.Time `json:"not_after,omitzero"`
}

// forever is the expiry of a revocation whose certificate's is unknown.
var forever = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// Type implements Command.
func (CertIssue) Type() CommandType { return CmdCertIssue }

// Type implements Command.
func (CertRevoke) Type() CommandType { return CmdCertRevoke }

func (CertIssue) isCommand()  {}
func (CertRevoke) isCommand() {}

func applyCertIssue(s *state, c CertIssue) error {
	if c.Serial == "" || len(c.Serial) > 64 || c.Node == "" {
		return fmt.Errorf("cert issue: serial and node needed: %w", ErrInvalid)
	}
	if old, ok := s.certs[c.Serial]; ok && (old.Node != c.Node || old.Revoked) {
		return fmt.Errorf("cert issue %s: %w", c.Serial, ErrExists)
	}
	for _, serial := range slices.Sorted(maps.Keys(s.certs)) {
		if s.certs[serial].NotAfter.Before(c.At) {
			delete(s.certs, serial)
		}
	}
	s.certs[c.Serial] = Cert{Serial: c.Serial, Node: c.Node, NotAfter: c.NotAfter}
	return nil
}

func applyCertRevoke(s *state, c CertRevoke) error {
	cert, ok := s.certs[c.Serial]
	if !ok {
		// Unknown serials are revoked all the same: a certificate
		// nobody recorded must still be refusable.
		cert = Cert{Serial: c.Serial, NotAfter: c.NotAfter}
		if cert.NotAfter.IsZero() {
			cert.NotAfter = forever
		}
	}
	cert.Revoked = true
	s.certs[c.Serial] = cert
	return nil
}

// revokeNode revokes every certificate of a removed node.
func (s *state) revokeNode(name string) {
	for serial, c := range s.certs {
		if c.Node == name {
			c.Revoked = true
			s.certs[serial] = c
		}
	}
}

func (s *state) certList() []Cert {
	out := make([]Cert, 0, len(s.certs))
	for _, serial := range slices.Sorted(maps.Keys(s.certs)) {
		out = append(out, s.certs[serial])
	}
	return out
}

// Certs returns the certificates the cluster knows of, by serial.
func (r stateReader) Certs() []Cert {
	var out []Cert
	r.fsm.view(func(st *state) { out = st.certList() })
	return out
}

// CertRevoked reports whether the certificate with this serial (hex) was
// revoked.
func (r stateReader) CertRevoked(serial string) bool {
	var revoked bool
	r.fsm.view(func(st *state) { revoked = st.certs[serial].Revoked })
	return revoked
}
