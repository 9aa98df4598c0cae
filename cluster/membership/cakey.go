package membership

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/peer"
	"ssi/cluster/transport"
	"ssi/raftstore"
)

// CAPath is where a voter asks a voter holding the CA key for it
// (HandleCA).
const CAPath = "/v1/ca"

// caCheckEvery paces keepCA: the Raft configuration changes without an
// entry the store's Changed sees, so it is read on a ticker.
const caCheckEvery = time.Second

// caKeyReply carries the CA key, PKCS#8 DER, inside the mutually
// authenticated connection of the asking voter.
type caKeyReply struct {
	Key []byte `json:"key"`
}

// keepCA makes the CA key follow the voters: at start and every
// caCheckEvery, a voter without it takes it, a node that is not a voter
// deletes it from memory and disk. A voter also has its own certificate
// recorded (the founder's was issued before there was a state).
func (t *Trust) keepCA(ctx context.Context) {
	tick := time.NewTicker(caCheckEvery)
	defer tick.Stop()
	for {
		t.checkCA(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (t *Trust) checkCA(ctx context.Context) {
	s, err := t.c.Store()
	if err != nil {
		return
	}
	voter, known := voterState(s, t.cfg.Node)
	switch {
	case !known:
		// No configuration yet: nothing tells us what we are.
	case !voter:
		t.dropCA()
	default:
		if t.id.Signer() == nil {
			if err := t.pullCA(ctx, caHolders(s, t.cfg.Node)); err != nil && err.Error() != t.caErr && ctx.Err() == nil {
				t.log.Warn("a voter without the ca key: taking it failed, retrying", "err", err)
				t.caErr = err.Error()
			}
		}
		t.recordOwn(ctx, s)
	}
}

// voterState says whether node is a voter in s's Raft configuration;
// known is false while the configuration is empty or unreadable (a node
// absent from a configuration that lists others is known: not a voter).
func voterState(s *raftstore.Store, node string) (voter, known bool) {
	servers, err := s.Servers()
	if err != nil || len(servers) == 0 {
		return false, false
	}
	for _, srv := range servers {
		if srv.ID == node {
			return srv.Voter, true
		}
	}
	return false, true
}

// dropCA deletes the CA key from disk and memory, if this node has it.
func (t *Trust) dropCA() {
	_, err := os.Stat(filepath.Join(t.tlsDir(), transport.CAKeyFile))
	if t.id.Signer() == nil && errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err := transport.RemoveCAKey(t.tlsDir()); err != nil {
		t.log.Error("a node that is not a voter cannot delete the ca key", "err", err)
		return
	}
	_ = t.id.SetCAKey(nil)
	t.log.Info("gave up the ca key: this node is not a voter")
}

// pullCA asks the members at addrs in turn for the CA key, and keeps
// the first good one in memory and on disk (0600).
func (t *Trust) pullCA(ctx context.Context, addrs []string) error {
	err := errors.New("no voter to ask")
	for _, addr := range addrs {
		var reply caKeyReply
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = t.c.Post(cctx, addr, CAPath, []byte("{}"), &reply)
		cancel()
		if err != nil {
			continue
		}
		var key *ecdsa.PrivateKey
		if key, err = parseCAKey(reply.Key); err == nil {
			err = t.id.SetCAKey(key)
		}
		if err != nil {
			err = fmt.Errorf("ca key from %s: %w", addr, err)
			continue
		}
		if err := transport.SaveCA(t.tlsDir(), &transport.CA{Cert: t.id.CA.Cert, Key: key}); err != nil {
			t.log.Error("saving the ca key: this voter holds it until it stops", "err", err)
		}
		t.caErr = ""
		t.log.Info("took the ca key: this node is a voter", "from", addr)
		return nil
	}
	return err
}

func parseCAKey(der []byte) (*ecdsa.PrivateKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("ca key %T is not ecdsa", k)
	}
	return key, nil
}

// caHolders are the voters to ask for the CA key: the leader first.
func caHolders(s *raftstore.Store, self string) []string {
	var out []string
	leaderID, leaderAddr := s.Leader()
	if leaderAddr != "" && leaderID != self {
		out = append(out, leaderAddr)
	}
	servers, _ := s.Servers()
	for _, srv := range servers {
		if srv.Voter && srv.ID != self && srv.Addr != leaderAddr {
			out = append(out, srv.Addr)
		}
	}
	return out
}

// recordOwn has this voter's certificate recorded in the agreed state
// if it is not (the founder's, issued before the state existed), so
// that it can be revoked with its node. Only voters may record
// certificates: others' were recorded by whoever issued them.
func (t *Trust) recordOwn(ctx context.Context, s *raftstore.Store) {
	leaf := t.id.Leaf()
	serial := transport.Serial(leaf)
	if t.recorded == serial {
		return
	}
	for _, c := range s.Certs() {
		if c.Serial == serial {
			t.recorded = serial
			return
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := t.c.Apply(cctx, raftstore.CertIssue{Serial: serial, Node: t.cfg.Node, NotAfter: leaf.NotAfter, At: t.now()})
	if err != nil {
		t.log.Debug("recording this node's certificate", "err", err)
		return
	}
	t.recorded = serial
	t.log.Info("recorded this node's certificate", "serial", serial, "expires", leaf.NotAfter)
}

// HandleCA hands the CA key to a voter that lacks it: the caller's
// certificate must name a member that is a voter in this node's Raft
// configuration, and not be revoked. Any node holding the key answers;
// one without it answers 503, and the voter asks another.
func (t *Trust) HandleCA(w http.ResponseWriter, r *http.Request) {
	s, err := t.c.Store()
	if err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	caller, serial := callerOf(r)
	if err := peer.CheckMember(s, caller, serial); err != nil {
		t.log.Warn("refused the ca key", "peer", caller, "err", err)
		api.WriteError(w, http.StatusForbidden, err)
		return
	}
	if voter, _ := voterState(s, caller); !voter {
		t.log.Warn("refused the ca key to a node that is not a voter", "peer", caller)
		api.WriteError(w, http.StatusForbidden, fmt.Errorf("%s is not a voter: only voters hold the ca key", caller))
		return
	}
	ca := t.id.Signer()
	if ca == nil {
		api.WriteError(w, http.StatusServiceUnavailable, errors.New("this node holds no ca key"))
		return
	}
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, err)
		return
	}
	t.log.Info("handed the ca key to a voter", "node", caller)
	api.WriteJSON(w, http.StatusOK, caKeyReply{Key: der})
}

// callerOf is the node a peer request comes from, by the certificate
// its connection was authenticated with, and that certificate's serial.
func callerOf(r *http.Request) (name, serial string) {
	conn := api.ConnOf(r)
	leaf := transport.PeerLeaf(conn)
	if leaf == nil {
		return "", ""
	}
	return transport.PeerName(conn), transport.Serial(leaf)
}
