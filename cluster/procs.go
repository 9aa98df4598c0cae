package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"ssi/cluster/wire"
	"ssi/fs"
	"ssi/migrate"
	"ssi/raftstore"
)

// ProcInfo is one line of `ssi ps`.
type ProcInfo struct {
	CPID     int       `json:"cpid"`
	Node     string    `json:"node"`
	Home     string    `json:"home"`
	UID      int       `json:"uid"`
	User     string    `json:"user"`
	State    string    `json:"state"`
	CPU      float64   `json:"cpu"` // percent of one CPU
	RSS      uint64    `json:"rss"` // bytes
	Pid      int       `json:"pid"` // on the node it runs on
	NMigs    int       `json:"nmigs"`
	Lock     bool      `json:"lock"`
	CantMove string    `json:"cantmove,omitempty"`
	Argv     []string  `json:"argv"`
	Started  time.Time `json:"started"`
}

// ProcSample is what a node measures of a process running there; it
// travels with the node's telemetry.
type ProcSample struct {
	Pid      int     `json:"pid"`
	CPU      float64 `json:"cpu"`
	RSS      uint64  `json:"rss"`
	CantMove string  `json:"cantmove,omitempty"`
}

// KillRequest signals a cluster process wherever it runs.
type KillRequest struct {
	CPID   int  `json:"cpid"`
	Signal int  `json:"signal"`
	All    bool `json:"all"`
	UID    int  `json:"uid"`
	// Forwarded: sent by the node the caller asked; a node that finds the
	// process gone from it answers EBUSY and the sender looks again,
	// rather than passing the signal on.
	Forwarded bool `json:"forwarded,omitempty"`
}

// WaitResult is how a process ended; Code is nil when unknown.
type WaitResult struct {
	Code *int `json:"code"`
}

// Run asks the local agent to start a detached cluster process; it
// returns its cpid.
func (c *Client) Run(ctx context.Context, req RunRequest) (int, error) {
	var out struct {
		CPID int `json:"cpid"`
	}
	req.Attach = false
	return out.CPID, c.call(ctx, http.MethodPost, "/v1/run", req, &out)
}

// Attached is the stdio stream of a process started by RunAttached.
type Attached struct {
	CPID int
	conn net.Conn
	fc   *wire.Conn

	mu     sync.Mutex // protects credit and over
	more   *sync.Cond // credit grew, or Relay returned
	credit uint64     // stdin bytes the agent lets us send in all (wire.FrCredit)
	over   bool       // Relay returned
}

// RunAttached starts a cluster process whose stdio comes back on the
// returned stream.
func (c *Client) RunAttached(ctx context.Context, req RunRequest) (*Attached, error) {
	req.Attach = true
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoAgent, err)
	}
	body, _ := json.Marshal(req)
	hreq, _ := http.NewRequest(http.MethodPost, "http://agent/v1/run", bytes.NewReader(body))
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", stdioUpgrade)
	if err := hreq.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, hreq)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		var e apiError
		if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e) == nil && e.Error != "" {
			return nil, errors.New(e.Error)
		}
		return nil, fmt.Errorf("agent: %s", resp.Status)
	}
	fc := wire.NewConn(&bufConn{r: br, Conn: conn})
	var first struct {
		CPID int `json:"cpid"`
	}
	if err := fc.Expect(wire.FrCPID, &first); err != nil {
		conn.Close()
		return nil, err
	}
	return &Attached{CPID: first.CPID, conn: conn, fc: fc}, nil
}

// Relay copies stdin to the process and its output to stdout and stderr,
// passes on signals, and returns the process's exit code. Stdin goes no
// faster than the agent's credit allows, so that the stream never backs
// up and a signal always reaches the agent at once.
func (at *Attached) Relay(stdin io.Reader, stdout, stderr io.Writer, signals <-chan os.Signal) (int, error) {
	at.more = sync.NewCond(&at.mu)
	defer at.conn.Close()
	defer at.stop()
	go at.pour(stdin)
	go func() {
		for s := range signals {
			if sig, ok := s.(syscall.Signal); ok {
				_ = at.fc.Send(wire.FrSignal, []byte{byte(sig)})
			}
		}
	}()
	for {
		typ, b, err := at.fc.Recv()
		if err != nil {
			return 255, fmt.Errorf("lost the agent before the process ended: %w", err)
		}
		switch typ {
		case wire.FrStdout:
			_, _ = stdout.Write(b)
		case wire.FrStderr:
			_, _ = stderr.Write(b)
		case wire.FrCredit:
			if n, ok := wire.ParseCredit(b); ok {
				at.grant(n)
			}
		case wire.FrError:
			return 255, fmt.Errorf("the agent ended the stream: %s", b)
		case wire.FrExit:
			var e wire.ExitInfo
			if err := json.Unmarshal(b, &e); err != nil {
				return 255, err
			}
			return e.Code, nil
		}
	}
}

// pour sends stdin, reading no more than the credit lets it send, then
// the EOF.
func (at *Attached) pour(stdin io.Reader) {
	buf := make([]byte, stdioChunk)
	var sent uint64
	for {
		may, ok := at.mayPour(sent)
		if !ok {
			return
		}
		n, err := stdin.Read(buf[:min(may, uint64(len(buf)))])
		if n > 0 {
			if at.fc.Send(wire.FrStdin, buf[:n]) != nil {
				return
			}
			sent += uint64(n)
		}
		if err != nil {
			_ = at.fc.Send(wire.FrEOF, nil)
			return
		}
	}
}

// mayPour waits until the credit goes past sent and says by how much;
// false once Relay has returned.
func (at *Attached) mayPour(sent uint64) (uint64, bool) {
	at.mu.Lock()
	defer at.mu.Unlock()
	for at.credit <= sent && !at.over {
		at.more.Wait()
	}
	if at.over {
		return 0, false
	}
	return at.credit - sent, true
}

// grant takes the agent's credit: a total, so the largest counts.
func (at *Attached) grant(n uint64) {
	at.mu.Lock()
	defer at.mu.Unlock()
	if n > at.credit {
		at.credit = n
		at.more.Broadcast()
	}
}

// stop ends pour's wait for credit.
func (at *Attached) stop() {
	at.mu.Lock()
	defer at.mu.Unlock()
	at.over = true
	at.more.Broadcast()
}

// Migrate moves a process ("NODE", "home" or "balance").
func (c *Client) Migrate(ctx context.Context, cpid int, target string) error {
	return c.callLong(ctx, http.MethodPost, "/v1/migrate", MigrateRequest{CPID: cpid, Target: target}, nil)
}

// Procs lists every cluster process.
func (c *Client) Procs(ctx context.Context) ([]ProcInfo, error) {
	var out []ProcInfo
	return out, c.call(ctx, http.MethodGet, "/v1/procs", nil, &out)
}

// Kill signals a process wherever it runs.
func (c *Client) Kill(ctx context.Context, req KillRequest) error {
	return c.call(ctx, http.MethodPost, "/v1/kill", req, nil)
}

// Wait blocks until the process has ended.
func (c *Client) Wait(ctx context.Context, cpid int) (WaitResult, error) {
	var out WaitResult
	return out, c.callLong(ctx, http.MethodGet, "/v1/wait?cpid="+strconv.Itoa(cpid), nil, &out)
}

// Moves lists the recent migrations.
func (c *Client) Moves(ctx context.Context) ([]raftstore.MoveRecord, error) {
	var out []raftstore.MoveRecord
	return out, c.call(ctx, http.MethodGet, "/v1/migrations", nil, &out)
}

func (a *Agent) handleProcs(w http.ResponseWriter, _ *http.Request) {
	s, err := a.member()
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	writeJSON(w, http.StatusOK, a.procInfos(s))
}

// procInfos joins the agreed processes with their nodes' samples. Why a
// process cannot move comes from its node's sample (what it holds now)
// or else from the agreed state (why its last move failed, as every node
// knows the moment the mover does).
func (a *Agent) procInfos(s *raftstore.Store) []ProcInfo {
	out := []ProcInfo{}
	lastMove := map[int]raftstore.MoveRecord{}
	for _, m := range s.Moves() {
		lastMove[m.CPID] = m
	}
	for _, p := range s.Procs() {
		pi := ProcInfo{CPID: p.CPID, Node: p.Node, Home: p.Home, UID: p.UID, User: userName(p.UID),
			State: string(p.State), NMigs: p.NMigs, Lock: p.Lock, Argv: p.Argv, Started: p.StartedAt}
		if smp, ok := a.telemetry.Get(p.Node); ok {
			if ps, ok := smp.Procs[p.CPID]; ok {
				pi.Pid, pi.CPU, pi.RSS, pi.CantMove = ps.Pid, ps.CPU, ps.RSS, ps.CantMove
			}
		}
		if m, ok := lastMove[p.CPID]; ok && pi.CantMove == "" && !m.Committed && m.Reason != "" {
			pi.CantMove = firstLineOf(m.Reason)
		}
		if p.State == raftstore.ProcMigrating {
			pi.CantMove = "a migration is under way"
		}
		out = append(out, pi)
	}
	return out
}

func (a *Agent) handleMoves(w http.ResponseWriter, _ *http.Request) {
	s, err := a.member()
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	writeJSON(w, http.StatusOK, s.Moves())
}

// handleKill is `ssi kill`, as the calling user.
func (a *Agent) handleKill(w http.ResponseWriter, r *http.Request) {
	uid, _, ok := peerCred(connOf(r))
	var req KillRequest
	if !ok || json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req) != nil {
		writeMigrateErr(w, fmt.Errorf("%w: want {cpid, signal}", fs.ErrBadValue))
		return
	}
	req.UID = int(uid)
	if err := a.kill(r.Context(), req); err != nil {
		writeMigrateErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// handlePeerKill signals a process running here for another node.
func (a *Agent) handlePeerKill(w http.ResponseWriter, r *http.Request) {
	var req KillRequest
	if json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req) != nil {
		writeMigrateErr(w, fmt.Errorf("%w: want {cpid, signal}", fs.ErrBadValue))
		return
	}
	if err := a.kill(r.Context(), req); err != nil {
		writeMigrateErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// kill delivers a signal where the process runs: to its init, which
// passes it to the job's leader, or with All to every process of the job.
func (a *Agent) kill(ctx context.Context, req KillRequest) error {
	if req.Signal <= 0 || req.Signal > 64 {
		return fmt.Errorf("%w: signal %d", fs.ErrBadValue, req.Signal)
	}
	s, err := a.member()
	if err != nil {
		return fsError(err)
	}
	if err := a.waitAdoption(ctx); err != nil {
		return fmt.Errorf("%w: %v", fs.ErrBusy, err)
	}
	// A process in the middle of a move is signalled once it has landed:
	// each round reads where it is past the read barrier, so a move that
	// returned anywhere before is seen.
	deadline := time.Now().Add(migrateTimeout)
	for {
		p, ok := a.findProc(ctx, s, req.CPID)
		if !ok {
			return fs.ErrNoProcess
		}
		if req.UID != 0 && req.UID != p.UID {
			return fmt.Errorf("%w: process %d belongs to uid %d", fs.ErrPermission, p.CPID, p.UID)
		}
		if p.State != raftstore.ProcMigrating {
			switch {
			case p.Node != a.cfg.NodeName && req.Forwarded:
				return fmt.Errorf("%w: process %d is not on %s any more", fs.ErrBusy, p.CPID, a.cfg.NodeName)
			case p.Node != a.cfg.NodeName:
				err := a.killThere(ctx, p.Node, req)
				if !errors.Is(err, fs.ErrBusy) {
					return err
				}
			default:
				// Here by the agreed state; a stopped copy left by a move
				// away (gone) or a frozen one (moving) must not take it.
				if j, ok := a.job(req.CPID); ok {
					j.mu.Lock()
					live := !j.moving && !j.gone
					j.mu.Unlock()
					if live {
						return signalJob(j, syscall.Signal(req.Signal), req.All)
					}
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: process %d is migrating", fs.ErrBusy, req.CPID)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// killThere asks the node the process runs on to signal it.
func (a *Agent) killThere(ctx context.Context, node string, req KillRequest) error {
	addr, err := a.nodeAddr(node)
	if err != nil {
		return fmt.Errorf("%w: %v", fs.ErrNodeDown, err)
	}
	req.Forwarded = true
	body, _ := json.Marshal(req)
	err = a.post(ctx, addr, "/v1/kill", body, nil)
	if err != nil && errors.Is(err, errRetry) {
		return fmt.Errorf("%w: %v", fs.ErrNodeDown, err)
	}
	return err
}

func signalJob(j *job, sig syscall.Signal, all bool) error {
	if !all {
		if err := syscall.Kill(j.pid(), sig); err != nil {
			return fmt.Errorf("%w: signal %d to process %d: %v", fs.ErrNoProcess, sig, j.cpid, err)
		}
		return nil
	}
	// Everyone but the init, which ends by itself once they are gone.
	for _, pid := range migrate.Tree(j.pid())[1:] {
		_ = syscall.Kill(pid, sig)
	}
	return nil
}

// handleWait answers once the process has ended.
func (a *Agent) handleWait(w http.ResponseWriter, r *http.Request) {
	cpid, err := strconv.Atoi(r.URL.Query().Get("cpid"))
	if err != nil {
		writeMigrateErr(w, fmt.Errorf("%w: cpid %q", fs.ErrBadValue, r.URL.Query().Get("cpid")))
		return
	}
	s, err := a.member()
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	if _, ok := a.findProc(r.Context(), s, cpid); !ok {
		if e, ok := s.Ended(cpid); ok {
			writeJSON(w, http.StatusOK, WaitResult{Code: e.ExitCode})
			return
		}
		writeMigrateErr(w, fmt.Errorf("%w: %d", fs.ErrNoProcess, cpid))
		return
	}
	for {
		if _, ok := s.Proc(cpid); !ok {
			e, _ := s.Ended(cpid)
			writeJSON(w, http.StatusOK, WaitResult{Code: e.ExitCode})
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// jobSamples measures the processes running here, for telemetry.
func (a *Agent) jobSamples(prev map[int]procCPU, now time.Time) (map[int]ProcSample, map[int]procCPU) {
	a.jobsMu.Lock()
	jobs := make([]*job, 0, len(a.jobs))
	for _, j := range a.jobs {
		jobs = append(jobs, j)
	}
	a.jobsMu.Unlock()
	out := map[int]ProcSample{}
	next := map[int]procCPU{}
	for _, j := range jobs {
		j.mu.Lock()
		moving := j.moving
		j.mu.Unlock()
		ps := ProcSample{Pid: j.pid()}
		var ticks uint64
		for _, pid := range migrate.Tree(j.pid()) {
			st, _ := migrate.ReadStat(pid)
			ticks += st.Ticks
			ps.RSS += st.RSS
		}
		next[j.cpid] = procCPU{ticks: ticks, at: now}
		if p, ok := prev[j.cpid]; ok && now.After(p.at) && ticks >= p.ticks {
			ps.CPU = 100 * float64(ticks-p.ticks) / clockTicks / now.Sub(p.at).Seconds()
		}
		if !moving {
			ps.CantMove = a.cantMove(j)
		}
		if ps.CantMove == "" {
			a.jobsMu.Lock()
			ps.CantMove = a.lastFailure[j.cpid]
			a.jobsMu.Unlock()
		}
		out[j.cpid] = ps
	}
	return out, next
}

type procCPU struct {
	ticks uint64
	at    time.Time
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times.
const clockTicks = 100

// userName is uid's login name, or the number.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

// firstLineOf is s up to its first newline: cantmove is one line.
func firstLineOf(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
