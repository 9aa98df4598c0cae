package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"

	"ssi/raftstore"
)

// RunRequest starts a cluster process on this node.
type RunRequest struct {
	Argv []string `json:"argv"`
	Dir  string   `json:"dir"`
	Env  []string `json:"env"`
}

// Run asks the local agent to start a detached cluster process; it
// returns its cpid.
func (c *Client) Run(ctx context.Context, req RunRequest) (int, error) {
	var out struct {
		CPID int `json:"cpid"`
	}
	return out.CPID, c.call(ctx, http.MethodPost, "/v1/run", req, &out)
}

// handleRun starts a job as the calling user: `ssi job-init` as PID 1 of
// a new PID namespace and session, running the command, in this node's
// cgroup. It is registered in the agreed state with the cpid equal to the
// pid the caller sees where that number is free, and forgotten when the
// whole job has ended.
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
	cmd, err := a.jobCommand(req, uid, gid)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	if err := cmd.Start(); err != nil {
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
		writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("registering the process: %w", err))
		return
	}
	go a.reapJob(cmd, res.CPID)
	writeJSON(w, http.StatusOK, map[string]int{"cpid": res.CPID})
}

// jobCommand builds the job's init, as the caller, stdio on /dev/null.
func (a *Agent) jobCommand(req RunRequest, uid, gid uint32) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{"job-init", "--"}, req.Argv...)...)
	cmd.Dir, cmd.Env = req.Dir, req.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Setsid: true}
	if uid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: gid}
	}
	return cmd, nil
}

// reapJob waits for the job to end and removes it from the agreed state.
func (a *Agent) reapJob(cmd *exec.Cmd, cpid int) {
	err := cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	a.log.Info("process ended", "cpid", cpid, "code", code)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.apply(ctx, raftstore.ProcRemove{CPID: cpid}); err != nil {
		a.log.Warn("forgetting an ended process", "cpid", cpid, "err", err)
	}
}
