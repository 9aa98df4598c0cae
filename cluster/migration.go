package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"ssi/cluster/jobns"
	"ssi/cluster/transport"
	"ssi/cluster/wire"
	"ssi/fs"
	"ssi/migrate"
	"ssi/raftstore"
)

// Migration, the transaction (see DESIGN.md in this package's parent):
// the source records the move in the agreed state, checks the
// destination can take the process, dumps the tree and leaves it
// stopped, streams the images over the mutual-TLS migration port, and
// the destination restores it stopped. Who won is decided by one Raft
// command, MigrationEnd: the source commits when the destination says the
// restore worked, and aborts on any failure; a destination that loses the
// source after its restore tries to commit. Whichever applies first wins;
// the other side learns the outcome from the agreed state. Only then the
// winner's copy continues (SIGCONT) and the loser's is killed, so a
// process never runs twice and is never lost.

// migrateTimeout bounds one migration's stream and restore.
const migrateTimeout = 10 * time.Minute

// MigrateRequest asks to move a process ("NODE", "home" or "balance").
type MigrateRequest struct {
	CPID   int    `json:"cpid"`
	Target string `json:"target"`
	UID    uint32 `json:"uid"`
}

// Migrate moves cpid to target on behalf of uid and returns when it is
// done. Errors wrap fs's domain errors, which say the errno.
func (a *Agent) Migrate(ctx context.Context, cpid int, target string, uid uint32) (err error) {
	// EIO never answers a valid request: a failure the contract has no
	// errno for is the process's inability to move (cantmove says why).
	defer func() {
		if err != nil && fs.ErrnoName(err) == "EIO" {
			err = fmt.Errorf("%w: %v", fs.ErrCannotMove, err)
		}
	}()
	// A caller that goes away (an interrupted writer, ssi migrate ^C, a
	// peer's timeout) must not cut a move short: the process may be
	// stopped in the middle of it.
	ctx = context.WithoutCancel(ctx)
	s, err := a.member()
	if err != nil {
		return fsError(err)
	}
	p, ok := a.findProc(ctx, s, cpid)
	if !ok {
		return fs.ErrNoProcess
	}
	if uid != 0 && int(uid) != p.UID {
		return fmt.Errorf("%w: process %d belongs to uid %d", fs.ErrPermission, cpid, p.UID)
	}
	to, err := a.resolveTarget(s, p, strings.TrimSpace(target))
	if err != nil || to == "" {
		return err
	}
	if p.State == raftstore.ProcMigrating {
		return fmt.Errorf("%w: process %d is migrating", fs.ErrBusy, cpid)
	}
	if p.Node == a.cfg.NodeName {
		return a.migrateOut(ctx, cpid, to)
	}
	n, ok := s.Node(p.Node)
	if !ok || n.Addr == "" {
		return fmt.Errorf("%w: process %d is on %s, which is unknown", fs.ErrNodeDown, cpid, p.Node)
	}
	return a.postMigrate(ctx, n.Addr, MigrateRequest{CPID: cpid, Target: to, UID: uid})
}

// resolveTarget turns a write to `where` into a node name; "" means
// there is nothing to do (already home, already the best place).
func (a *Agent) resolveTarget(s *raftstore.Store, p raftstore.Proc, target string) (string, error) {
	switch target {
	case "home":
		if p.Node == p.Home {
			return "", nil
		}
		target = p.Home
	case "balance":
		best := a.leastLoaded(s, p.Node)
		if best == "" || best == p.Node {
			return "", nil
		}
		target = best
	}
	if transport.ValidNodeName(target) != nil {
		return "", fmt.Errorf("%w: %q is not a node, \"home\" or \"balance\"", fs.ErrBadValue, target)
	}
	n, ok := s.Node(target)
	switch {
	case !ok:
		return "", fmt.Errorf("%w: no node called %q", fs.ErrBadValue, target)
	case target == p.Node:
		return "", fmt.Errorf("%w: process %d already runs on %s", fs.ErrBadValue, p.CPID, target)
	case n.State != raftstore.NodeUp:
		return "", fmt.Errorf("%w: %s is %s", fs.ErrNodeDown, target, n.State)
	case n.Admin.Block:
		return "", fmt.Errorf("%w: %s refuses arriving processes (block)", fs.ErrNodeDown, target)
	}
	return target, nil
}

// leastLoaded picks the up, unblocked node with the most idle CPU; the
// current node wins ties, so balance does not move a process for nothing.
func (a *Agent) leastLoaded(s *raftstore.Store, current string) string {
	best, bestIdle := "", -1.0
	for _, n := range a.nodeInfos(s) {
		node, _ := s.Node(n.Name)
		if n.State != string(raftstore.NodeUp) || node.Admin.Block {
			continue
		}
		idle := n.CPUs - n.Load
		if n.Name == current {
			idle += 0.25
		}
		if idle > bestIdle {
			best, bestIdle = n.Name, idle
		}
	}
	return best
}

// postMigrate asks the agent where the process runs to move it.
func (a *Agent) postMigrate(ctx context.Context, addr string, req MigrateRequest) error {
	body, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(ctx, migrateTimeout)
	defer cancel()
	err := a.postLong(ctx, addr, "/v1/migrate", body, nil)
	if errors.Is(err, errRetry) {
		return fmt.Errorf("%w: asking %s: %v", fs.ErrNodeDown, addr, err)
	}
	return err
}

// handlePeerMigrate moves a process that runs here, for another node.
func (a *Agent) handlePeerMigrate(w http.ResponseWriter, r *http.Request) {
	var req MigrateRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		writeMigrateErr(w, fmt.Errorf("%w: %v", fs.ErrBadValue, err))
		return
	}
	if err := a.Migrate(r.Context(), req.CPID, req.Target, req.UID); err != nil {
		writeMigrateErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// handleLocalMigrate is `ssi migrate`, as the calling user.
func (a *Agent) handleLocalMigrate(w http.ResponseWriter, r *http.Request) {
	uid, _, ok := peerCred(connOf(r))
	if !ok {
		writeMigrateErr(w, fmt.Errorf("%w: cannot tell who is asking", fs.ErrPermission))
		return
	}
	var req MigrateRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		writeMigrateErr(w, fmt.Errorf("%w: %v", fs.ErrBadValue, err))
		return
	}
	if err := a.Migrate(r.Context(), req.CPID, req.Target, uid); err != nil {
		writeMigrateErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func writeMigrateErr(w http.ResponseWriter, err error) {
	writeJSON(w, http.StatusConflict, apiError{Error: err.Error(), Errno: fs.ErrnoName(err)})
}

// errnoError rebuilds a domain error from its errno name.
func errnoError(name, msg string) error {
	if e := fs.ErrorForErrno(name); e != nil {
		return &remoteErrno{msg: msg, sentinel: e}
	}
	return errors.New(msg)
}

// remoteErrno is an error from another agent: its message as it was,
// and the domain error it stands for.
type remoteErrno struct {
	msg      string
	sentinel error
}

func (e *remoteErrno) Error() string { return e.msg }
func (e *remoteErrno) Unwrap() error { return e.sentinel }

// migrateOut is the source's side of the transaction.
func (a *Agent) migrateOut(ctx context.Context, cpid int, to string) (err error) {
	start := time.Now()
	if err := a.waitAdoption(ctx); err != nil {
		return fmt.Errorf("%w: %v", fs.ErrBusy, err)
	}
	j, ok := a.job(cpid)
	if !ok {
		return fmt.Errorf("%w: process %d is not running here", fs.ErrNoProcess, cpid)
	}
	j.mu.Lock()
	if j.moving || j.gone {
		j.mu.Unlock()
		return fmt.Errorf("%w: process %d is migrating", fs.ErrBusy, cpid)
	}
	j.moving = true
	j.mu.Unlock()
	defer func() {
		j.mu.Lock()
		j.moving = false
		j.mu.Unlock()
		if err != nil {
			a.setCantMove(cpid, err.Error())
			a.log.Warn("migration failed", "cpid", cpid, "to", to, "err", err)
		}
	}()
	s, err := a.member()
	if err != nil {
		return fsError(err)
	}
	n, ok := s.Node(to)
	if !ok {
		return fmt.Errorf("%w: no node called %q", fs.ErrBadValue, to)
	}
	id := randomID()
	if _, err := a.apply(ctx, raftstore.MigrationStart{ID: id, CPID: cpid, To: to, StartedAt: start}); err != nil {
		return fsError(err)
	}
	// A refusal is recorded like any failed move, so that cantmove says
	// why on every node as soon as the writer of where hears it.
	if why := a.cantMove(j); why != "" {
		stats := &raftstore.MoveStats{Reason: why, Total: time.Since(start), EndedAt: time.Now()}
		if _, err := a.settle(cpid, id, false, stats); err != nil {
			a.settleLater(cpid, id, false, stats, func(outcome) {})
		}
		return fmt.Errorf("%w: %s", fs.ErrCannotMove, why)
	}
	m := &moveOut{a: a, j: j, id: id, to: to, addr: n.Addr, start: start}
	moved, err := m.run(ctx)
	a.metrics.moved(moved, m.frozen, time.Since(start), m.bytes)
	if moved {
		a.jobsMu.Lock()
		delete(a.lastFailure, cpid)
		a.jobsMu.Unlock()
		a.log.Info("migrated", append([]any{"cpid", cpid, "to", to, "frozen", m.frozen, "total", time.Since(start),
			"bytes", m.bytes}, m.phases...)...)
		return nil
	}
	if err == nil {
		err = errors.New("the destination did not take the process")
	}
	return err
}

// moveOut is one outgoing migration.
type moveOut struct {
	a      *Agent
	j      *job
	id, to string
	addr   string
	start  time.Time
	frozen time.Duration
	bytes  int64
	phases []any // for the log: when each step ended, from the freeze
}

// run performs the move; it returns whether the process now runs on the
// destination. On false, the process runs here again.
func (m *moveOut) run(ctx context.Context) (moved bool, err error) {
	a, j := m.a, m.j
	ctx, cancel := context.WithTimeout(ctx, migrateTimeout)
	defer cancel()
	dir := filepath.Join(a.cfg.CRIUWorkDir, "out-"+m.id)
	defer os.RemoveAll(dir)

	var stopped time.Time
	var st *stdioState
	// fail aborts the migration in the agreed state and resumes the
	// process here, unless the destination's commit won the race.
	fail := func(cause error) (bool, error) {
		reason := cause.Error()
		if !stopped.IsZero() {
			m.frozen = time.Since(stopped)
		}
		resume := func() {
			if !stopped.IsZero() {
				_ = migrate.SignalTree(j.pid(), syscall.SIGCONT)
				if j.hold != nil && st != nil {
					j.hold.resume(st)
				}
			}
		}
		stats := &raftstore.MoveStats{Reason: reason, Frozen: m.frozen, Total: time.Since(m.start),
			Bytes: m.bytes, EndedAt: time.Now()}
		o, err := a.settle(m.j.cpid, m.id, false, stats)
		if err != nil {
			// Nobody knows yet who won: the copy here stays stopped until
			// the agreed state says.
			a.settleLater(m.j.cpid, m.id, false, stats, func(o outcome) {
				if o == aborted {
					resume()
				} else {
					m.finishHere()
				}
			})
			return false, fmt.Errorf("%w: %v; the outcome is not known yet (%v)", fs.ErrNoQuorum, cause, err)
		}
		switch o {
		case committed:
			// The destination committed: it runs there.
			m.finishHere()
			return true, nil
		case gone:
			m.finishHere()
			return false, fmt.Errorf("%w: process %d was removed during its move", fs.ErrNoProcess, m.j.cpid)
		}
		resume()
		return false, cause
	}

	conn, err := transport.Dial(ctx, m.addr, transport.ProtoMigrate, a.identity())
	if err != nil {
		return fail(fmt.Errorf("%w: reaching %s: %v", fs.ErrNodeDown, m.to, err))
	}
	defer conn.Close()
	stopOnCancel := context.AfterFunc(ctx, func() { conn.Close() })
	defer stopOnCancel()
	c := wire.NewConn(conn)
	p, _ := a.store.Proc(j.cpid)
	mounts, err := jobns.NodeMounts(j.pid())
	if err != nil {
		return fail(fmt.Errorf("%w: its mounts: %v", fs.ErrCannotMove, err))
	}
	uid, gid, err := procCreds(j.pid())
	if err != nil {
		return fail(fmt.Errorf("%w: %v", fs.ErrNoProcess, err))
	}
	shared := append([]string{a.cfg.Mountpoint + "/"}, jobns.OwnPrefixes()...)
	hdr := wire.StreamHeader{Kind: "move", CPID: j.cpid, ID: m.id, From: a.cfg.NodeName, UID: p.UID, Home: p.Home,
		Attached: j.hold != nil, Files: migrate.OutsideFiles(j.pid(), shared...), PageServer: true, Mounts: mounts}
	for i := range 3 {
		hdr.Pipes[i] = migrate.FDKey(j.pid(), i)
	}
	if j.hold != nil && j.hold.winW != nil {
		hdr.Pipes[3] = migrate.FDKey(j.pid(), jobns.WinsizeFD)
	}
	if err := c.SendJSON(wire.FrHeader, hdr); err != nil {
		return fail(fmt.Errorf("%w: %s: %v", fs.ErrNodeDown, m.to, err))
	}
	var ready wire.RestoreReply
	if err := c.Expect(wire.FrReady, &ready); err != nil {
		return fail(fmt.Errorf("%w: %s: %v", fs.ErrNodeDown, m.to, err))
	}
	if !ready.OK {
		return fail(fmt.Errorf("%w: %s", fs.ErrCannotMove, ready.Error))
	}

	dopts := migrate.DumpOptions{Pid: j.pid(), Dir: dir, LeaveStopped: true, FileLocks: true,
		UID: uid, GID: gid, NodeMounts: mounts}
	failDump := os.Getenv("SSI_FAIL_DUMP")
	if failDump == "criu" {
		// CRIU fails inside the dump, the tree frozen: /cluster is not
		// named a node mount, and CRIU cannot dump a FUSE mount.
		dopts.NodeMounts = slices.DeleteFunc(slices.Clone(mounts), func(mp string) bool { return mp == a.cfg.Mountpoint })
	}
	var pages *pageRelay
	if ready.PageServer {
		if pages, err = newPageRelay(c); err != nil {
			return fail(err)
		}
		defer pages.close()
		dopts.PageServer = pages.criu
		pages.start()
	}
	received := make(chan error, 1)
	if pages != nil {
		go func() { received <- pages.receive() }()
	}
	stopped = time.Now()
	_, err = a.criu.Dump(ctx, dopts)
	if pages != nil {
		// CRIU is done with its end: ours reads EOF and the relay ends.
		pages.criu.Close()
		perr := pages.finish()
		if rerr := <-received; perr == nil {
			perr = rerr
		}
		m.bytes = pages.sentBytes()
		if err == nil && perr != nil {
			err = fmt.Errorf("%w: pages to %s: %v", fs.ErrNodeDown, m.to, perr)
			// The dump itself worked: the tree is stopped here.
			return fail(err)
		}
	}
	if err != nil {
		// CRIU resumes the tree when a dump fails, unless it was killed
		// itself: resuming again is harmless.
		_ = migrate.SignalTree(j.pid(), syscall.SIGCONT)
		stopped = time.Time{}
		return fail(fmt.Errorf("%w: %v", fs.ErrCannotMove, err))
	}
	if failDump == "after" {
		return fail(fmt.Errorf("%w: the dump is made to fail (SSI_FAIL_DUMP=after)", fs.ErrCannotMove))
	}
	m.phases = append(m.phases, "dump", time.Since(stopped).Round(time.Millisecond))
	// The frozen tree's writes to /cluster/home that this node still
	// buffers must be agreed before the destination catches up and
	// reopens the files: else its next append lands on a stale end.
	if mnt := a.mount.Load(); mnt != nil {
		if err := mnt.FlushHome(ctx); err != nil {
			return fail(fmt.Errorf("%w: committing its writes to /cluster/home: %v", fs.ErrNoQuorum, err))
		}
	}
	m.phases = append(m.phases, "flush", time.Since(stopped).Round(time.Millisecond))
	if j.hold != nil {
		if st, err = j.hold.detach(ctx); err != nil {
			return fail(err)
		}
	}
	if st == nil {
		st = &stdioState{}
	}
	sent, err := wire.SendImages(c, dir)
	m.bytes += sent
	if err == nil {
		err = c.SendJSON(wire.FrPending, st)
	}
	if err != nil {
		return fail(fmt.Errorf("%w: sending to %s: %v", fs.ErrNodeDown, m.to, err))
	}
	m.phases = append(m.phases, "send", time.Since(stopped).Round(time.Millisecond))
	var rr wire.RestoreReply
	if err := c.Expect(wire.FrRestored, &rr); err != nil {
		return fail(fmt.Errorf("%w: %s during restore: %v", fs.ErrNodeDown, m.to, err))
	}
	if !rr.OK {
		return fail(fmt.Errorf("%w: restore on %s: %s", fs.ErrCannotMove, m.to, rr.Error))
	}
	m.frozen = time.Since(stopped)
	m.phases = append(m.phases, "restored", m.frozen.Round(time.Millisecond))
	stats := &raftstore.MoveStats{Frozen: m.frozen, Total: time.Since(m.start), Bytes: m.bytes, EndedAt: time.Now()}
	o, err := a.settle(j.cpid, m.id, true, stats)
	if err != nil {
		// Unknown outcome: the copy here stays stopped (and the one there,
		// which waits for our verdict or the agreed state) until it is known.
		a.settleLater(j.cpid, m.id, true, stats, func(o outcome) {
			if o != aborted {
				m.finishHere()
			} else {
				_ = migrate.SignalTree(j.pid(), syscall.SIGCONT)
				if j.hold != nil {
					j.hold.resume(st)
				}
			}
		})
		return false, fmt.Errorf("%w: the outcome could not be recorded yet: %v", fs.ErrNoQuorum, err)
	}
	_ = c.SendJSON(wire.FrDecision, wire.Decision{Commit: o == committed})
	switch o {
	case aborted:
		return fail(errors.New("aborted by the destination"))
	case gone:
		m.finishHere()
		return false, fmt.Errorf("%w: process %d was removed during its move", fs.ErrNoProcess, j.cpid)
	}
	m.finishHere()
	_ = c.Expect(wire.FrDone, nil)
	return true, nil
}

// finishHere kills the stopped copy of a process that now runs elsewhere.
func (m *moveOut) finishHere() {
	j := m.j
	j.mu.Lock()
	j.gone = true
	j.mu.Unlock()
	// Killing the init of a PID namespace kills all of it.
	_ = syscall.Kill(j.pid(), syscall.SIGKILL)
	_ = migrate.SignalTree(j.pid(), syscall.SIGKILL)
	if j.hold != nil {
		j.hold.close()
	}
}

// outcome is how a migration ended, as the agreed state says.
type outcome int

const (
	aborted   outcome = iota // the process stays at its source
	committed                // the process is at its destination
	// gone: the migration ended with no record of how (the process was
	// removed meanwhile). No copy may run: it is not the cluster's.
	gone
)

// settle applies the end of migration id with the outcome we want and
// returns the outcome that holds: ours, or the other side's if it ended
// the migration first, read by id from the recent moves. It retries while
// the cluster has no quorum; until the outcome is known no copy may run.
func (a *Agent) settle(cpid int, id string, commit bool, st *raftstore.MoveStats) (outcome, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	want := aborted
	if commit {
		want = committed
	}
	for {
		_, err := a.apply(ctx, raftstore.MigrationEnd{CPID: cpid, ID: id, Commit: commit, Stats: st})
		if err == nil {
			return want, nil
		}
		if errors.Is(err, raftstore.ErrNotFound) {
			// Already ended by the other side: read how.
			if err := a.catchUp(ctx); err == nil {
				s, _ := a.member()
				if m, busy := s.Migration(cpid); !busy || m.ID != id {
					moves := s.Moves()
					for i := len(moves) - 1; i >= 0; i-- {
						if moves[i].ID == id && moves[i].CPID == cpid {
							if moves[i].Committed {
								return committed, nil
							}
							return aborted, nil
						}
					}
					return gone, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return aborted, err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// serveMigrations serves the migration port: stdio streams of attached
// processes and incoming moves.
func (a *Agent) serveMigrations(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go a.serveMigrationConn(conn)
	}
}

func (a *Agent) serveMigrationConn(conn net.Conn) {
	defer conn.Close()
	c := wire.NewConn(conn)
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var hdr wire.StreamHeader
	if err := c.Expect(wire.FrHeader, &hdr); err != nil {
		a.log.Debug("migration port: bad stream", "peer", transport.PeerName(conn), "err", err)
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	switch hdr.Kind {
	case "stdio":
		a.jobsMu.Lock()
		s := a.sessions[hdr.CPID]
		a.jobsMu.Unlock()
		if s == nil {
			return
		}
		// Only the node the process runs on holds its stdio.
		if peer := transport.PeerName(conn); !a.runsOn(hdr.CPID, peer) {
			a.log.Warn("refusing a stdio stream", "cpid", hdr.CPID, "peer", peer)
			return
		}
		s.serveHolder(c)
	case "move":
		a.receiveMove(conn, c, hdr)
	}
}

// receiveMove is the destination's side of the transaction.
func (a *Agent) receiveMove(conn net.Conn, c *wire.Conn, hdr wire.StreamHeader) {
	log := a.log.With("cpid", hdr.CPID, "from", hdr.From, "id", hdr.ID)
	refuse := func(typ wire.Frame, why string) {
		log.Warn("refusing an arriving process", "why", why)
		_ = c.SendJSON(typ, wire.RestoreReply{Error: why})
	}
	if peer := transport.PeerName(conn); peer != hdr.From {
		refuse(wire.FrReady, fmt.Sprintf("%s may not move processes of %s", peer, hdr.From))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), migrateTimeout)
	defer cancel()
	stopOnCancel := context.AfterFunc(ctx, func() { conn.Close() })
	defer stopOnCancel()
	if err := a.waitAdoption(ctx); err != nil {
		refuse(wire.FrReady, err.Error())
		return
	}
	if err := a.catchUp(ctx); err != nil {
		refuse(wire.FrReady, fmt.Sprintf("%s cannot reach the leader: %v", a.cfg.NodeName, err))
		return
	}
	s, _ := a.member()
	mig, ok := s.Migration(hdr.CPID)
	me, _ := s.Node(a.cfg.NodeName)
	switch {
	case !ok || mig.ID != hdr.ID || mig.To != a.cfg.NodeName || mig.From != hdr.From:
		refuse(wire.FrReady, "no such migration in the agreed state")
		return
	case me.Admin.Block:
		refuse(wire.FrReady, a.cfg.NodeName+" refuses arriving processes (block)")
		return
	}
	if err := a.checkNodeMounts(hdr.Mounts); err != nil {
		refuse(wire.FrReady, fmt.Sprintf("%s cannot give the process its mounts: %v", a.cfg.NodeName, err))
		return
	}
	// The job init arriving processes run is this node's copy of the
	// same build (jobInitPath), made at start; made now if that failed.
	_, _ = a.jobInitPath()
	if missing := migrate.MissingFiles(hdr.Files); len(missing) > 0 {
		refuse(wire.FrReady, fmt.Sprintf("%s lacks files the process uses: %s", a.cfg.NodeName, strings.Join(missing[:min(3, len(missing))], "; ")))
		return
	}
	dir := filepath.Join(a.cfg.CRIUWorkDir, "in-"+hdr.ID)
	defer os.RemoveAll(dir)
	var pages *pageRelay
	if hdr.PageServer {
		var err error
		if pages, err = a.startPageServer(ctx, c, dir); err != nil {
			log.Warn("no page server: pages come with the other images", "err", err)
			pages = nil
		} else {
			defer pages.close()
		}
	}
	if err := c.SendJSON(wire.FrReady, wire.RestoreReply{OK: true, PageServer: pages != nil}); err != nil {
		return
	}
	t0 := time.Now()
	if pages != nil {
		err := pages.receive()
		if err == nil {
			// The page server closes its socket once it has stored
			// everything: our relay then ends.
			err = pages.finish()
		}
		if err != nil {
			log.Warn("receiving pages", "err", err)
			return
		}
	}
	if err := wire.RecvImages(c, dir); err != nil {
		log.Warn("receiving images", "err", err)
		return
	}
	var st stdioState
	if err := c.Expect(wire.FrPending, &st); err != nil {
		log.Warn("receiving stdio state", "err", err)
		return
	}
	// Home barrier: the process's files in /cluster/home must be here as
	// the source last saw them before CRIU reopens them.
	if err := a.catchUp(ctx); err != nil {
		refuse(wire.FrRestored, fmt.Sprintf("catching up with the leader: %v", err))
		return
	}
	var ours pipeEnds
	var inherit []migrate.InheritFD
	if hdr.Attached {
		var theirs []*os.File
		var err error
		if ours, theirs, err = jobPipes(hdr.Pipes[3] != ""); err != nil {
			refuse(wire.FrRestored, err.Error())
			return
		}
		keys := map[string]bool{}
		for i, k := range hdr.Pipes[:len(theirs)] {
			if k != "" && !keys[k] {
				keys[k] = true
				inherit = append(inherit, migrate.InheritFD{Key: k, File: theirs[i]})
			}
		}
		defer func() {
			for _, f := range theirs[1:] {
				f.Close()
			}
		}()
	}
	closeOurs := func() {
		for _, f := range ours {
			if f != nil {
				f.Close()
			}
		}
	}
	received := time.Since(t0)
	t1 := time.Now()
	r, err := a.criu.Restore(ctx, migrate.RestoreOptions{Dir: dir, InheritFDs: inherit, LeaveStopped: true,
		FileLocks: true, NodeMounts: hdr.Mounts})
	restored := time.Since(t1)
	if err != nil {
		closeOurs()
		refuse(wire.FrRestored, err.Error())
		return
	}
	proc, perr := os.FindProcess(r.Pid)
	if perr != nil {
		_ = syscall.Kill(r.Pid, syscall.SIGKILL)
		closeOurs()
		refuse(wire.FrRestored, perr.Error())
		return
	}
	// Should this agent die before the verdict, the next one settles it.
	a.writeJobRecord(hdr.CPID, r.Pid, true)
	crashPoint("restored")
	log.Info("restored, waiting for the verdict", "pid", r.Pid, "receive", received.Round(time.Millisecond),
		"restore", restored.Round(time.Millisecond), "criu_restore", r.Restore.Round(time.Millisecond))
	if err := c.SendJSON(wire.FrRestored, wire.RestoreReply{OK: true, Pid: r.Pid}); err != nil {
		log.Warn("the source went away after the restore", "err", err)
	}
	var d wire.Decision
	var won bool
	if err := c.Expect(wire.FrDecision, &d); err != nil {
		// The source is gone: the agreed state decides, and we ask for
		// the commit (the restore worked).
		log.Warn("no verdict from the source; settling through the cluster", "err", err)
		stats := &raftstore.MoveStats{Reason: "source lost after restore", EndedAt: time.Now()}
		var o outcome
		o, err = a.settle(hdr.CPID, hdr.ID, true, stats)
		if err != nil {
			log.Error("migration outcome unknown; the restored copy waits stopped", "err", err)
			a.settleLater(hdr.CPID, hdr.ID, true, stats, func(o outcome) {
				a.landed(log, hdr, o == committed, r.Pid, proc, ours, &st)
			})
			return
		}
		won = o == committed
	} else {
		won = d.Commit
		crashPoint("verdict")
	}
	if a.landed(log, hdr, won, r.Pid, proc, ours, &st) {
		_ = c.Send(wire.FrDone, nil)
	}
}

// landed finishes an arrival once its outcome is known: the restored
// copy runs as a job of this node, or is killed. It reports whether the
// process runs here.
func (a *Agent) landed(log *slog.Logger, hdr wire.StreamHeader, won bool, pid int, proc *os.Process, ours pipeEnds, st *stdioState) bool {
	closeOurs := func() {
		for _, f := range ours {
			if f != nil {
				f.Close()
			}
		}
	}
	if !won {
		_ = migrate.SignalTree(pid, syscall.SIGKILL)
		_, _ = proc.Wait()
		closeOurs()
		a.forgetJobRecord(hdr.CPID)
		return false
	}
	j := &job{cpid: hdr.CPID, proc: proc}
	if hdr.Attached {
		j.hold = a.newHolder(hdr.CPID, hdr.Home, ours, st)
		j.hold.pid = j.pid
		j.hold.start()
	}
	if err := enterJobCgroup(hdr.CPID, migrate.Tree(pid)...); err != nil {
		log.Warn("the job's cgroup", "err", err)
	}
	a.addJob(j)
	_ = migrate.SignalTree(pid, syscall.SIGCONT)
	log.Info("process arrived", "pid", pid)
	return true
}

// cantMove says why the job cannot move now, "" if it can.
func (a *Agent) cantMove(j *job) string {
	s, err := a.member()
	if err == nil {
		if p, ok := s.Proc(j.cpid); ok && p.Lock {
			return "locked (write 0 to lock to let it move)"
		}
	}
	return migrate.CantMove(j.pid())
}

// checkNodeMounts refuses node mounts a source names that this node
// lacks, or that are not node mounts at all.
func (a *Agent) checkNodeMounts(mps []string) error {
	if len(mps) == 0 {
		return nil
	}
	here, err := jobns.MountPoints(os.Getpid())
	if err != nil {
		return err
	}
	for _, mp := range mps {
		if err := jobns.ValidNodeMount(mp, here); err != nil {
			return err
		}
	}
	return nil
}

// procCreds reads the real uid and gid of pid: who its checkpoint runs as.
func procCreds(pid int) (uid, gid uint32, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	var got int
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, perr := strconv.ParseUint(f[1], 10, 32)
		switch {
		case f[0] == "Uid:" && perr == nil:
			uid, got = uint32(v), got|1
		case f[0] == "Gid:" && perr == nil:
			gid, got = uint32(v), got|2
		}
	}
	if got != 3 {
		return 0, 0, fmt.Errorf("no uid and gid in /proc/%d/status", pid)
	}
	return uid, gid, nil
}

// setCantMove remembers why the last migration of cpid failed, for the
// cantmove file until the next attempt.
func (a *Agent) setCantMove(cpid int, why string) {
	a.jobsMu.Lock()
	defer a.jobsMu.Unlock()
	a.lastFailure[cpid] = why
}

// startPageServer starts a CRIU page server storing into dir, relayed to
// the stream.
func (a *Agent) startPageServer(ctx context.Context, c *wire.Conn, dir string) (*pageRelay, error) {
	p, err := newPageRelay(c)
	if err != nil {
		return nil, err
	}
	if _, err := a.criu.StartPageServer(ctx, dir, p.criu); err != nil {
		p.close()
		return nil, err
	}
	// The page server holds its own copy now.
	p.criu.Close()
	p.start()
	return p, nil
}

// settleLater keeps asking the agreed state for the outcome of a move
// whose outcome could not be learnt, then acts on it. It gives up only
// when this agent leaves the cluster.
func (a *Agent) settleLater(cpid int, id string, commit bool, st *raftstore.MoveStats, then func(outcome)) {
	go func() {
		for {
			o, err := a.settle(cpid, id, commit, st)
			if err == nil {
				then(o)
				return
			}
			if errors.Is(err, raftstore.ErrClosed) || errors.Is(err, errNotMember) {
				return
			}
			a.log.Warn("migration outcome still unknown", "cpid", cpid, "id", id, "err", err)
		}
	}()
}

// findProc looks a process up past the read barrier: where it is now,
// even if a move returned on another node a moment ago.
func (a *Agent) findProc(ctx context.Context, s *raftstore.Store, cpid int) (raftstore.Proc, bool) {
	if _, err := a.fresh(ctx); err != nil {
		return raftstore.Proc{}, false
	}
	return s.Proc(cpid)
}

// runsOn reports whether the agreed state places cpid on node now.
func (a *Agent) runsOn(cpid int, node string) bool {
	s, err := a.member()
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, ok := a.findProc(ctx, s, cpid)
	return ok && p.Node == node
}

// SSI_FAIL_DUMP=criu|after in an agent's environment makes each of its
// dumps fail: inside CRIU with the tree frozen, or in ssi just after a
// successful dump. How the tests check that a failed move harms nothing.

// crashPoint kills this agent at a named step of an arrival when the
// environment asks for it (SSI_CRASH_AT=restored|verdict): how the tests
// crash a destination at an exact point of a move.
func crashPoint(name string) {
	if os.Getenv("SSI_CRASH_AT") == name {
		fmt.Fprintf(os.Stderr, "ssi agent: crashing at %q (SSI_CRASH_AT)\n", name)
		os.Exit(99)
	}
}
