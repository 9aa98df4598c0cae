package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"ssi/cluster/api"
	"ssi/cluster/jobns"
	"ssi/cluster/stdio"
	"ssi/cluster/wire"
	"ssi/migrate"
	"ssi/raftstore"
)

// HandleRun starts a job as the calling user really is (see callerOf):
// `ssi job-init` as PID 1 of a new PID namespace and session, running
// the command, in this node's cgroup. It is registered in the agreed
// state with the cpid equal to the pid the caller sees where that number
// is free, and forgotten when the whole job has ended. Attached, the
// connection becomes the job's stdio stream (frames) once the cpid is
// sent.
func (t *Table) HandleRun(w http.ResponseWriter, r *http.Request) {
	req, err := decodeRun(w, r)
	if err != nil {
		answer(w, http.StatusBadRequest, err)
		return
	}
	cl, err := callerOf(api.ConnOf(r), req.NofileSoft)
	if err != nil {
		api.WriteError(w, http.StatusForbidden, err)
		return
	}
	if _, err := t.c.Store(); err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	if err := t.WaitAdoption(r.Context()); err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	release, err := t.admit(r.Context(), cl.uid)
	if err != nil {
		answer(w, http.StatusServiceUnavailable, err)
		return
	}
	defer release()
	if node, err := homeOf(t).chooseNode(req.Node); err != nil || node != t.cfg.Node {
		if err != nil {
			answer(w, http.StatusServiceUnavailable, err)
			return
		}
		homeOf(t).run(w, r, placed{req: req, caller: cl, node: node, release: release})
		return
	}
	l := &launch{req: req, caller: cl}
	if status, err := l.start(t.cfg.DataDir); err != nil {
		api.WriteError(w, status, err)
		return
	}
	defer l.gateW.Close()
	cpid, err := t.register(r.Context(), l)
	if err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	release()
	j := &Job{cpid: cpid, proc: l.cmd.Process}
	if !req.Attach {
		t.add(j)
		api.WriteJSON(w, http.StatusOK, map[string]int{"cpid": cpid})
		return
	}
	t.attach(w, l, j)
}

// decodeRun reads a run request and checks what it asks for, before
// anything is started.
func decodeRun(w http.ResponseWriter, r *http.Request) (api.RunRequest, error) {
	var req api.RunRequest
	err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRunBody)).Decode(&req)
	var tooLong *http.MaxBytesError
	switch {
	case errors.As(err, &tooLong):
		return req, errTooBig(0)
	case err != nil:
		return req, errors.New("want a command")
	}
	if req.TTY && (req.Size.Rows == 0 || req.Size.Cols == 0) {
		req.Size = jobns.DefaultWinsize
	}
	return req, checkRun(req)
}

// checkRun refuses a run request that asks for what no job may have.
func checkRun(req api.RunRequest) error {
	switch {
	case len(req.Argv) == 0:
		return errors.New("want a command")
	case req.TTY && !req.Attach:
		return errors.New("a terminal needs an attached caller")
	case len(req.Dir) > unix.PathMax:
		return errors.New("the working directory's path is too long")
	case req.TTY && (req.Size.Rows == 0 || req.Size.Cols == 0):
		return errors.New("a terminal needs a size")
	}
	return tooBig(req.Argv, req.Env)
}

// launch is a job HandleRun is starting.
type launch struct {
	req    api.RunRequest
	caller caller
	cmd    *exec.Cmd
	ours   *stdio.Pipes // our ends of its stdio, when attached
	// gateW holds the job's init back until it is sent its Spec: the job
	// is registered (and in its cgroup) before it runs anything.
	gateW *os.File
}

// start starts the job's init, which waits at the gate; on failure it
// says the status to answer with.
func (l *launch) start(dataDir string) (int, error) {
	cmd, err := jobCommand(dataDir, l.req)
	if err != nil {
		return http.StatusBadRequest, err
	}
	var theirs []*os.File
	if l.req.Attach {
		l.ours, theirs, err = stdio.NewPipes(l.req.TTY)
		if err != nil {
			return http.StatusInternalServerError, err
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = theirs[0], theirs[1], theirs[2]
	}
	// Whatever this agent opened without close-on-exec (the FUSE device)
	// must not leak into the job: CRIU could not move it.
	_ = migrate.SealInheritedFDs()
	gateR, gateW, err := os.Pipe()
	if err != nil {
		l.ours.Close()
		closeAll(theirs)
		return http.StatusInternalServerError, err
	}
	cmd.ExtraFiles = []*os.File{gateR}
	if l.req.TTY {
		cmd.ExtraFiles = append(cmd.ExtraFiles, theirs[3]) // jobns.WinsizeFD
	}
	err = cmd.Start()
	gateR.Close()
	// Their write ends live in the job now; our read end of stdin stays
	// open: it is how stdin not yet read is taken back for a move.
	closeAll(theirs[min(1, len(theirs)):])
	if err != nil {
		gateW.Close()
		l.ours.Close()
		return http.StatusBadRequest, fmt.Errorf("start %s: %w", l.req.Argv[0], err)
	}
	l.cmd, l.gateW = cmd, gateW
	return 0, nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		if f != nil {
			_ = f.Close()
		}
	}
}

// register adds the started job to the agreed state, then lets it run:
// into its cgroup, and its Spec through the gate. A job the cluster did
// not take is killed.
func (t *Table) register(ctx context.Context, l *launch) (int, error) {
	pid := l.cmd.Process.Pid
	raw, err := t.c.Apply(ctx, raftstore.ProcAdd{CPID: pid, Home: t.cfg.Node,
		UID: int(l.caller.uid), Argv: l.req.Argv, StartedAt: time.Now()})
	var res raftstore.Result
	if err == nil {
		err = json.Unmarshal(raw, &res)
	}
	if err != nil {
		// Not registered: it must not run unseen.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = l.cmd.Wait()
		l.ours.Close()
		return 0, fmt.Errorf("registering the process: %w", err)
	}
	l.letRun(t.cg, t.log, res.CPID)
	return res.CPID, nil
}

// letRun puts a registered job into its cgroup and sends its init the
// Spec, through the gate: the job runs from now on.
func (l *launch) letRun(cg cgroups, log *slog.Logger, cpid int) {
	if err := cg.enter(cpid, l.cmd.Process.Pid); err != nil {
		log.Warn("the job's cgroup", "cpid", cpid, "err", err)
	}
	req := l.req
	spec, _ := json.Marshal(jobns.Spec{UID: l.caller.uid, GID: l.caller.gid, Dir: req.Dir, Env: req.Env,
		TTY: req.TTY, Size: req.Size, Caller: &l.caller.Caller})
	if _, err := l.gateW.Write(spec); err != nil {
		log.Warn("letting the job start", "cpid", cpid, "err", err)
	}
	l.gateW.Close()
}

// attach switches the caller's connection to the job's stdio stream: a
// session here relays it to the job's holder.
func (t *Table) attach(w http.ResponseWriter, l *launch, j *Job) {
	conn, client, err := upgrade(w)
	if err != nil {
		// The caller is gone before it could see anything: its process
		// has no one to talk to and ends.
		t.log.Warn("attached run: switching to the stdio stream", "cpid", j.cpid, "err", err)
		_ = syscall.Kill(j.Pid(), syscall.SIGKILL)
		l.ours.Close()
		t.add(j)
		return
	}
	s := openSession(t.sessions, j.cpid, client, l.req)
	go s.FromClient(client)
	j.hold = stdio.NewHolder(j.cpid, t.cfg.Node, j.Pid, l.ours, nil, t.dial, t.log)
	j.hold.Start()
	t.add(j)
	go func() {
		<-s.Done()
		conn.Close()
	}()
}

// upgrade switches the caller's connection to the stdio stream
// (api.StdioUpgrade); the returned conn is the connection, to close.
func upgrade(w http.ResponseWriter) (net.Conn, *wire.Conn, error) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err == nil {
		_, err = conn.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " +
			api.StdioUpgrade + "\r\n\r\n"))
	}
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, nil, err
	}
	return conn, wire.NewConn(api.BufConn{Reader: brw.Reader, Conn: conn}), nil
}

// openSession opens the home's session of process cpid for its caller
// client and tells the caller the cpid: output may flow from then on.
func openSession(sessions *stdio.Sessions, cpid int, client *wire.Conn, req api.RunRequest) *stdio.Session {
	s := sessions.Open(cpid, client)
	if req.TTY {
		s.SetTTY(req.Size)
	}
	_ = client.SendJSON(wire.FrCPID, map[string]int{"cpid": cpid})
	return s
}

// jobCommand builds the job's init: as root, in a new PID, mount and IPC
// namespace (its SysV objects are its own and move with it) and session,
// with a fixed environment (it runs as root until it has mounted the
// job's own file systems; see package jobns). It becomes uid/gid itself,
// from the Spec it is sent.
func jobCommand(dataDir string, req api.RunRequest) (*exec.Cmd, error) {
	self, err := InitPath(dataDir)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{"job-init", "--"}, req.Argv...)...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWIPC, Setsid: true}
	return cmd, nil
}
