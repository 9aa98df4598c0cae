package membership

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/peer"
	"ssi/cluster/transport"
	"ssi/raftstore"
)

// RenewPath is where the leader renews a member's certificate
// (HandleRenew).
const RenewPath = "/v1/renew"

// Bounds of the pause between failed renewals.
const (
	renewRetryMin = time.Second
	renewRetryMax = time.Minute
)

// renewRequest asks for a new certificate for the caller's own name and
// key: the key is the one the caller proved it holds in the handshake,
// so it never changes and a crash mid-renewal leaves a matching pair.
type renewRequest struct {
	Node string `json:"node"`
}

// renewReply is the new certificate, DER.
type renewReply struct {
	Cert []byte `json:"cert"`
}

// renewAt is when cert is due for renewal: two thirds into its life,
// counted from its issue. A certificate issued for longer than lifetime
// (before the lifetime was lowered, or the founder's) is renewed as if
// it had been issued for lifetime.
func renewAt(cert *x509.Certificate, lifetime time.Duration) time.Time {
	issued := transport.IssuedAt(cert)
	life := cert.NotAfter.Sub(issued)
	if lifetime > 0 && life > lifetime {
		life = lifetime
	}
	return issued.Add(life * 2 / 3)
}

// renewRetry is the pause after a failed renewal that paused prev: it
// doubles within bounds, and stays under half of what is left of the
// certificate's life, so that a few tries fit before it ends.
func renewRetry(prev, left time.Duration) time.Duration {
	d := min(max(2*prev, renewRetryMin), renewRetryMax)
	if left > 0 && d > left/2 {
		d = max(left/2, renewRetryMin/2)
	}
	return d
}

// renewLoop renews the node certificate at two thirds of its life,
// then the new one at two thirds of its own, until ctx ends; a failure
// is logged and retried (renewRetry).
func (t *Trust) renewLoop(ctx context.Context) {
	var retry time.Duration
	for {
		wait := renewAt(t.id.Leaf(), t.cfg.CertLifetime).Sub(t.now())
		if retry > 0 {
			wait = retry
		}
		select {
		case <-ctx.Done():
			return
		case <-t.after(wait):
		}
		err := t.renew(ctx)
		if err == nil {
			retry = 0
			continue
		}
		if ctx.Err() != nil {
			return
		}
		retry = renewRetry(retry, t.id.Expires().Sub(t.now()))
		t.renewFailed(err, retry)
	}
}

// renewFailed says why, and what it means once the certificate ended.
func (t *Trust) renewFailed(err error, retry time.Duration) {
	end := t.id.Expires()
	if t.now().Before(end) {
		t.log.Warn("renewing the node certificate failed", "err", err, "retry_in", retry, "expires", end)
		return
	}
	// Peers refuse an expired certificate, so the leader cannot be
	// asked any more, and LoadIdentity refuses it at the next start.
	t.log.Error("the node certificate expired: other nodes refuse this node, and it cannot renew it; "+
		"stop the agent, delete "+t.tlsDir()+" and start it again with a join token",
		"expired", end, "err", err)
}

// renew asks the leader for a new certificate, swaps it into every TLS
// configuration and saves it.
func (t *Trust) renew(ctx context.Context) error {
	var reply renewReply
	if err := t.c.Forward(ctx, RenewPath, renewRequest{Node: t.cfg.Node}, &reply); err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	cert, err := x509.ParseCertificate(reply.Cert)
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	if err := t.id.Renew(cert); err != nil {
		return err
	}
	if err := t.id.SaveCert(t.tlsDir()); err != nil {
		t.log.Error("saving the renewed certificate: a restart would use the old one", "err", err)
	}
	t.log.Info("renewed the node certificate", "serial", transport.Serial(cert), "expires", cert.NotAfter)
	return nil
}

// HandleRenew (leader) issues a member a new certificate for the name
// and key of the certificate it called with, valid for CertLifetime,
// and records it in the agreed state before answering: a certificate
// the state does not know could not be revoked with its node. Only the
// leader answers (421 otherwise), so the record is never stale.
func (t *Trust) HandleRenew(w http.ResponseWriter, r *http.Request) {
	s, err := t.c.Store()
	if err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	if !s.IsLeader() {
		api.WriteError(w, http.StatusMisdirectedRequest, raftstore.ErrNotLeader)
		return
	}
	var req renewRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10)).Decode(&req); err != nil {
		api.WriteError(w, http.StatusBadRequest, err)
		return
	}
	caller, serial := callerOf(r)
	if err := t.mayRenew(s, req, caller, serial); err != nil {
		t.log.Warn("refused to renew a certificate", "peer", caller, "for", req.Node, "err", err)
		api.WriteError(w, http.StatusForbidden, err)
		return
	}
	ca := t.id.Signer()
	if ca == nil {
		api.WriteError(w, http.StatusServiceUnavailable, errors.New("the leader holds no ca key yet"))
		return
	}
	leaf := transport.PeerLeaf(api.ConnOf(r))
	cert, err := transport.IssueFor(ca, caller, leaf.PublicKey, leaf.IPAddresses, t.cfg.CertLifetime)
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, err)
		return
	}
	rec := raftstore.CertIssue{Serial: transport.Serial(cert), Node: caller, NotAfter: cert.NotAfter, At: t.now()}
	if _, err := s.Apply(r.Context(), rec); err != nil {
		api.WriteError(w, peer.ApplyStatus(err), err)
		return
	}
	t.log.Debug("renewed a certificate", "node", caller, "serial", rec.Serial, "expires", cert.NotAfter)
	api.WriteJSON(w, http.StatusOK, renewReply{Cert: cert.Raw})
}

// mayRenew: a member renews its own certificate only, not revoked.
func (t *Trust) mayRenew(s *raftstore.Store, req renewRequest, caller, serial string) error {
	if caller == "" || req.Node != caller {
		return fmt.Errorf("%q may renew only its own certificate, not %q's", caller, req.Node)
	}
	return peer.CheckMember(s, caller, serial)
}
