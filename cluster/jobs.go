package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"ssi/cluster/jobns"
	"ssi/cluster/wire"
	"ssi/migrate"
	"ssi/raftstore"
)

// RunRequest starts a cluster process on this node.
type RunRequest struct {
	Argv   []string `json:"argv"`
	Dir    string   `json:"dir"`
	Env    []string `json:"env"`
	Attach bool     `json:"attach,omitempty"`
	// TTY gives the process a terminal of its own (attached only), of
	// size Size at first (jobns.DefaultWinsize if zero).
	TTY  bool          `json:"tty,omitempty"`
	Size jobns.Winsize `json:"size,omitzero"`
}

// job is a cluster process running on this node: its init, our child
// (started here, or restored here by CRIU as our child).
type job struct {
	cpid int
	proc *os.Process
	hold *holder // nil when detached

	mu sync.Mutex
	// moving is set while a migration has the process frozen; gone once
	// its stopped copy here was killed because it runs elsewhere now.
	moving, gone bool
	// adopted: started by an earlier agent, so not our child.
	adopted bool
}

func (j *job) pid() int { return j.proc.Pid }

// addJob starts supervising a running (or restored) job.
func (a *Agent) addJob(j *job) {
	a.jobsMu.Lock()
	a.jobs[j.cpid] = j
	a.jobsMu.Unlock()
	a.recordJob(j)
	go a.superviseJob(j)
}

func (a *Agent) job(cpid int) (*job, bool) {
	a.jobsMu.Lock()
	defer a.jobsMu.Unlock()
	j, ok := a.jobs[cpid]
	return j, ok
}

// superviseJob waits for the job's init to end. A job that moved away is
// only forgotten here; one that ended is forgotten by the cluster, with
// its exit code, and its attached caller learns the code.
func (a *Agent) superviseJob(j *job) {
	var exit *int
	if j.adopted {
		waitAdopted(j.pid())
	} else if st, err := j.proc.Wait(); err == nil {
		code := st.ExitCode()
		if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		exit = &code
	}
	a.forgetJobRecordOf(j.cpid, j.pid())
	go removeJobCgroup(j.cpid)
	a.jobsMu.Lock()
	if a.jobs[j.cpid] == j {
		delete(a.jobs, j.cpid)
		delete(a.lastFailure, j.cpid)
	}
	a.jobsMu.Unlock()
	j.mu.Lock()
	gone := j.gone
	j.mu.Unlock()
	if gone {
		return
	}
	code := -1
	if exit != nil {
		code = *exit
	}
	a.log.Info("process ended", "cpid", j.cpid, "code", code)
	// Agreed before the attached caller hears of it: once `ssi run` has
	// returned, no node lists the process.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.apply(ctx, raftstore.ProcRemove{CPID: j.cpid, ExitCode: exit, EndedAt: time.Now()}); err != nil {
		a.log.Warn("forgetting an ended process", "cpid", j.cpid, "err", err)
	}
	if j.hold != nil {
		j.hold.finish(code)
	}
}

// handleRun starts a job as the calling user: `ssi job-init` as PID 1 of
// a new PID namespace and session, running the command, in this node's
// cgroup. It is registered in the agreed state with the cpid equal to the
// pid the caller sees where that number is free, and forgotten when the
// whole job has ended. Attached, the connection becomes the job's stdio
// stream (frames) once the cpid is sent.
func (a *Agent) handleRun(w http.ResponseWriter, r *http.Request) {
	uid, gid, ok := peerCred(connOf(r))
	if !ok {
		writeErr(w, http.StatusForbidden, fmt.Errorf("cannot tell who is asking"))
		return
	}
	var req RunRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil || len(req.Argv) == 0 {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("want a command"))
		return
	}
	if _, err := a.member(); err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	if err := a.waitAdoption(r.Context()); err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	if req.TTY && !req.Attach {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("a terminal needs an attached caller"))
		return
	}
	if req.TTY && (req.Size.Rows == 0 || req.Size.Cols == 0) {
		req.Size = jobns.DefaultWinsize
	}
	cmd, err := a.jobCommand(req)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	var ours pipeEnds
	var theirs []*os.File
	if req.Attach {
		ours, theirs, err = jobPipes(req.TTY)
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err)
			return
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = theirs[0], theirs[1], theirs[2]
	}
	// Whatever this agent opened without close-on-exec (the FUSE device)
	// must not leak into the job: CRIU could not move it.
	_ = migrate.SealInheritedFDs()
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			if f != nil {
				_ = f.Close()
			}
		}
	}
	gateR, gateW, err := os.Pipe()
	if err != nil {
		closeAll(ours[:])
		closeAll(theirs)
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	defer gateW.Close()
	cmd.ExtraFiles = []*os.File{gateR}
	if req.TTY {
		cmd.ExtraFiles = append(cmd.ExtraFiles, theirs[3]) // jobns.WinsizeFD
	}
	err = cmd.Start()
	gateR.Close()
	// Their write ends live in the job now; our read end of stdin stays
	// open: it is how stdin not yet read is taken back for a move.
	closeAll(theirs[min(1, len(theirs)):])
	if err != nil {
		closeAll(ours[:])
		writeErr(w, http.StatusBadRequest, fmt.Errorf("start %s: %w", req.Argv[0], err))
		return
	}
	raw, err := a.apply(r.Context(), raftstore.ProcAdd{CPID: cmd.Process.Pid, Home: a.cfg.NodeName,
		UID: int(uid), Argv: req.Argv, StartedAt: time.Now()})
	var res raftstore.Result
	if err == nil {
		err = json.Unmarshal(raw, &res)
	}
	if err != nil {
		// Not registered: it must not run unseen.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		closeAll(ours[:])
		writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("registering the process: %w", err))
		return
	}
	if err := enterJobCgroup(res.CPID, cmd.Process.Pid); err != nil {
		a.log.Warn("the job's cgroup", "cpid", res.CPID, "err", err)
	}
	spec, _ := json.Marshal(jobns.Spec{UID: uid, GID: gid, Dir: req.Dir, Env: req.Env, TTY: req.TTY, Size: req.Size})
	if _, err := gateW.Write(spec); err != nil {
		a.log.Warn("letting the job start", "cpid", res.CPID, "err", err)
	}
	gateW.Close()
	j := &job{cpid: res.CPID, proc: cmd.Process}
	if !req.Attach {
		a.addJob(j)
		writeJSON(w, http.StatusOK, map[string]int{"cpid": res.CPID})
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err == nil {
		_, err = conn.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " +
			stdioUpgrade + "\r\n\r\n"))
	}
	if err != nil {
		// The caller is gone before it could see anything: its process
		// has no one to talk to and ends.
		a.log.Warn("attached run: switching to the stdio stream", "cpid", res.CPID, "err", err)
		if conn != nil {
			conn.Close()
		}
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		closeAll(ours[:])
		a.addJob(j)
		return
	}
	client := wire.NewConn(&bufConn{r: brw.Reader, Conn: conn})
	s := a.newSession(res.CPID, client)
	if req.TTY {
		s.setTTY(req.Size)
	}
	_ = client.SendJSON(wire.FrCPID, map[string]int{"cpid": res.CPID})
	go s.fromClient(client)
	j.hold = a.newHolder(res.CPID, a.cfg.NodeName, ours, nil)
	j.hold.pid = j.pid
	j.hold.start()
	a.addJob(j)
	go func() {
		<-s.done
		conn.Close()
	}()
}

// stdioUpgrade names the protocol an attached run switches to.
const stdioUpgrade = "ssi-stdio/1"

// pipeEnds are our ends of an attached job's pipes: stdin write, stdin
// read, stdout read, stderr read, and for a job with a terminal the
// write end of its window size pipe (nil otherwise).
type pipeEnds [5]*os.File

// jobPipes makes a job's three stdio pipes, and with tty its window size
// pipe: our ends, and theirs (stdin read, stdout write, stderr write,
// window sizes read). Both stdin ends are the same pipe: ours stays open.
func jobPipes(tty bool) (ours pipeEnds, theirs []*os.File, err error) {
	n := 3
	if tty {
		n = 4
	}
	var r, w [4]*os.File
	for i := range n {
		if r[i], w[i], err = os.Pipe(); err != nil {
			for k := range i {
				r[k].Close()
				w[k].Close()
			}
			return ours, nil, err
		}
	}
	ours = pipeEnds{w[0], r[0], r[1], r[2], w[3]}
	theirs = []*os.File{r[0], w[1], w[2]}
	if tty {
		theirs = append(theirs, r[3])
	}
	return ours, theirs, nil
}

// jobCommand builds the job's init: as root, in a new PID, mount and IPC
// namespace (its SysV objects are its own and move with it) and session,
// with a fixed environment (it runs as root until it has mounted the
// job's own file systems; see package jobns). It becomes uid/gid itself,
// from the Spec it is sent.
func (a *Agent) jobCommand(req RunRequest) (*exec.Cmd, error) {
	self, err := a.jobInitPath()
	if err != nil {
		return nil, err
	}
	size := len(req.Dir)
	for _, kv := range req.Env {
		size += len(kv) + 8
	}
	if size > jobns.MaxSpec-4096 {
		return nil, fmt.Errorf("the environment is larger than %d bytes", jobns.MaxSpec-4096)
	}
	cmd := exec.Command(self, append([]string{"job-init", "--"}, req.Argv...)...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWIPC, Setsid: true}
	return cmd, nil
}

var errNoJob = errors.New("the process does not run on this node")

// bufConn reads through the bufio.Reader a hijacked connection came with
// (it may hold the first bytes the caller sent) and writes to the conn.
type bufConn struct {
	r *bufio.Reader
	net.Conn
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }
