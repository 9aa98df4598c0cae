package peer

import (
	"fmt"
	"net"
	"net/http"
	"slices"

	"ssi/cluster/api"
	"ssi/cluster/transport"
	"ssi/fs"
	"ssi/raftstore"
)

// The trust model (CONTRACT.md, "Trust"): a member vouches for its own
// local users' uids, as an NFS client does with sec=sys, but it cannot
// act as another node. Its name is the CN of the certificate it
// presents on the cluster port, so everything a peer asks is checked
// against that name here: the commands it forwards (Authorize), and the
// uids it claims (EffectiveUID).

// Agreed is what the policy reads of the agreed state (a
// *raftstore.Store).
type Agreed interface {
	Node(name string) (raftstore.Node, bool)
	Proc(cpid int) (raftstore.Proc, bool)
	Migration(cpid int) (raftstore.Migration, bool)
	Servers() ([]raftstore.Server, error)
	CertRevoked(serial string) bool
}

// CheckMember refuses (fs.ErrPermission) a caller that is not a member
// now: a certificate outlives its node's membership, so a node removed
// (or never registered) must not write, and a revoked certificate is
// refused even under a member's name. A member is a node of the agreed
// state or of the Raft configuration (a node that joined is a Raft
// server a moment before it is a node).
func CheckMember(s Agreed, caller, serial string) error {
	if caller == "" {
		return fmt.Errorf("%w: the caller presented no certificate", fs.ErrPermission)
	}
	if serial != "" && s.CertRevoked(serial) {
		return fmt.Errorf("%w: the certificate of %s (serial %s) is revoked", fs.ErrPermission, caller, serial)
	}
	if _, ok := s.Node(caller); ok {
		return nil
	}
	servers, _ := s.Servers()
	if slices.ContainsFunc(servers, func(srv raftstore.Server) bool { return srv.ID == caller }) {
		return nil
	}
	return fmt.Errorf("%w: %s is not a member", fs.ErrPermission, caller)
}

// fromAnyMember are the commands any member may send. Tokens are
// created and revoked by any node's root, and spent by whichever member
// admits a newcomer; a revocation never grants anything. /cluster/home
// is written from every node, as the node's local users: the uids in
// those commands are the ones members vouch for (the model), checked by
// the writing node's FUSE layer.
var fromAnyMember = map[raftstore.CommandType]bool{
	raftstore.CmdTokenAdd: true, raftstore.CmdTokenRemove: true, raftstore.CmdTokenUse: true,
	raftstore.CmdTokenRevoke: true, raftstore.CmdCertRevoke: true,
	raftstore.CmdHomeConfig: true, raftstore.CmdHomeCreate: true, raftstore.CmdHomeWrite: true,
	raftstore.CmdHomeTruncate: true, raftstore.CmdHomeSetAttr: true, raftstore.CmdHomeLink: true,
	raftstore.CmdHomeUnlink: true, raftstore.CmdHomeRmdir: true, raftstore.CmdHomeRename: true,
}

// Authorize says whether member caller may have cmd applied for it by
// the leader (HandleApply): nil if it may, fs.ErrPermission if not, or
// the store's own error when what cmd names does not exist (the apply
// would say the same, and callers act on it). Commands the leader
// applies itself (registration, liveness, removal) never come here. A
// new command kind is refused until someone decides who may send it.
func Authorize(s Agreed, caller string, cmd raftstore.Command) error {
	deny := func(why string, a ...any) error {
		return fmt.Errorf("%w: %s may not apply %v: %s", fs.ErrPermission, caller, cmd.Type(), fmt.Sprintf(why, a...))
	}
	if fromAnyMember[cmd.Type()] {
		return nil
	}
	switch c := cmd.(type) {
	case raftstore.CertIssue:
		// Only voters hold the CA key: they issue certificates (to
		// newcomers, renewals) and record them. A voter could mint any
		// certificate anyway, so its record is taken; others have none
		// to record.
		servers, _ := s.Servers()
		if !slices.ContainsFunc(servers, func(srv raftstore.Server) bool { return srv.ID == caller && srv.Voter }) {
			return deny("only voters, which hold the CA key, issue certificates")
		}
		return nil
	case raftstore.NodeUpsert:
		return self(caller, c.Name, deny)
	case raftstore.NodeSetState:
		return self(caller, c.Name, deny)
	case raftstore.NodeRemove:
		return self(caller, c.Name, deny)
	case raftstore.AdminSet:
		return self(caller, c.Node, deny)
	case raftstore.ProcAdd:
		// A node starts processes of its own users only: their home is
		// the node that vouches for their uid. It may list one on another
		// node (ssi run --node): that node starts it only when this home
		// asks (jobs.Table.HandleStart), and its next agent forgets a
		// listing it never started.
		if c.Home != caller {
			return deny("a process homed on %q", c.Home)
		}
		return nil
	case raftstore.ProcUpdate:
		if c.Lock != nil && c.Node == nil && c.State == nil && c.ExitCode == nil && c.NMigs == nil {
			// A pin (/cluster/proc/N/lock) is written on any node, which
			// checked that its user owns the process; it only keeps the
			// process where it is.
			return nil
		}
		return holds(s, caller, c.CPID, false, deny)
	case raftstore.ProcRemove:
		return holds(s, caller, c.CPID, false, deny)
	case raftstore.MigrationStart:
		return holds(s, caller, c.CPID, true, deny)
	case raftstore.MigrationPhase:
		return moves(s, caller, c.CPID, c.ID, deny)
	case raftstore.MigrationEnd:
		return moves(s, caller, c.CPID, c.ID, deny)
	}
	return deny("no member may send it")
}

// self allows a command about node name only to that node.
func self(caller, name string, deny func(string, ...any) error) error {
	if name != caller {
		return deny("it is about node %q", name)
	}
	return nil
}

// holds allows a command about process cpid only to the node it runs
// on or, unless onlyHost, its home. Only the host starts a move: it is
// the one that dumps the process.
func holds(s Agreed, caller string, cpid int, onlyHost bool, deny func(string, ...any) error) error {
	p, ok := s.Proc(cpid)
	if !ok {
		return fmt.Errorf("process %d: %w", cpid, raftstore.ErrNotFound)
	}
	if p.Node != caller && (onlyHost || p.Home != caller) {
		return deny("process %d is homed on %s and runs on %s", cpid, p.Home, p.Node)
	}
	return nil
}

// moves allows the progress and end of a move only to its two ends, and
// only naming the move: a command without its id could, applied a moment
// later, end another move of the process that began meanwhile.
func moves(s Agreed, caller string, cpid int, id string, deny func(string, ...any) error) error {
	if id == "" {
		return deny("it does not name the move of process %d", cpid)
	}
	m, ok := s.Migration(cpid)
	if !ok || m.ID != id {
		return fmt.Errorf("migration %q of process %d: %w", id, cpid, raftstore.ErrNotFound)
	}
	if m.From != caller && m.To != caller {
		return deny("the move of process %d is from %s to %s", cpid, m.From, m.To)
	}
	return nil
}

// Nobody is the uid a squashed root claim becomes (NFS's root_squash
// maps to the overflow uid alike).
const Nobody = 65534

// EffectiveUID is the uid a request from node caller acts as when it
// claims uid claimed on process p (the zero Proc when there is none).
// A member vouches for its own users, so a non-zero uid is taken as
// claimed. Root is another matter: root on node X is root only for
// processes X holds or is the home of. On another node's process it
// acts as that process's owner if that is not root (X vouches for all
// its users, so X's root could claim that uid anyway: refusing it would
// protect nothing), and is squashed to Nobody on root's processes, as
// NFS's root_squash does: a member cannot pass its root for root
// elsewhere.
func EffectiveUID(caller string, claimed int, p raftstore.Proc) int {
	switch {
	case claimed != 0:
		return claimed
	case caller != "" && (p.Home == caller || p.Node == caller):
		return 0
	case p.CPID != 0 && p.UID != 0:
		return p.UID
	}
	return Nobody
}

// Caller is the node at the other end of conn and its certificate's
// serial (transport.Serial): "" for both if it presented none.
func Caller(conn net.Conn) (name, serial string) {
	leaf := transport.PeerLeaf(conn)
	if leaf == nil {
		return "", ""
	}
	return transport.PeerName(conn), transport.Serial(leaf)
}

// ClaimedUID is EffectiveUID for a peer request r about process cpid:
// the caller is the node r's certificate names, and the process is read
// past the read barrier (none found: a root claim is squashed). Peer
// handlers that take a uid from the request body call it first.
func ClaimedUID(r *http.Request, f Freshener, s *raftstore.Store, cpid, claimed int) int {
	p, _ := FindProc(r.Context(), f, s, cpid)
	return EffectiveUID(transport.PeerName(api.ConnOf(r)), claimed, p)
}
