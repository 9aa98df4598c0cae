package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// agents owns the processes the lab runs in its nodes: a command entering
// a node (its cgroups, then its namespaces), and each node's agent, with
// its pid file, log and socket.
type agents struct {
	layout
	cg     cgroups  // the cgroups a process entering a node joins
	nw     network  // the address each agent advertises
	binary string   // the ssi binary run as agent; empty: no agents
	args   []string // extra arguments for every agent
}

// enter builds the command: a shell joins the node's cgroups, then nsenter
// joins its namespaces and execs args, so that the pid the caller sees is
// the command's own.
func (a *agents) enter(k int, args []string) *exec.Cmd {
	var script strings.Builder
	for _, d := range a.cg.cgroupDirs(k) {
		fmt.Fprintf(&script, "echo $$ > %s && ", shellQuote(filepath.Join(d, "cgroup.procs")))
	}
	wd, err := os.Getwd()
	if err != nil {
		wd = "/"
	}
	// Not nsenter --wd: it opens the directory before entering the mount
	// namespace, leaving the command's cwd on a mount of the host's
	// namespace, which CRIU cannot dump ("mount failed (-22)").
	script.WriteString(`exec nsenter --net=` + shellQuote("/run/netns/"+a.netnsName(k)) +
		` --mount=` + shellQuote(a.mntPin(k)) +
		` -- sh -c 'cd "$0" 2>/dev/null || cd /; exec "$@"' "$@"`)
	full := append([]string{"-c", script.String(), "ssi-lab-enter", wd}, args...)
	cmd := exec.Command("sh", full...)
	cmd.Env = append(os.Environ(), "SSI_LAB_NODE="+nodeName(k), "SSI_LAB="+a.name)
	return cmd
}

func (a *agents) agentPidFile(k int) string { return filepath.Join(a.nodeDir(k), "agent.pid") }

// AgentSocket is the host path of node's agent socket (/run/ssi/agent.sock
// inside the node).
func (a *agents) AgentSocket(node string) string {
	k, _ := nodeIndex(node)
	return filepath.Join(a.nodeDir(k), "run", "agent.sock")
}

// agentPid returns the pid of node k's agent if it is running.
func (a *agents) agentPid(k int) (int, bool) {
	b, err := os.ReadFile(a.agentPidFile(k))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, processAlive(pid)
}

// processAlive is true for a live process; a zombie is dead.
func processAlive(pid int) bool {
	// A killed process's leader is a zombie while its other threads are
	// still exiting; the process still holds its files (an agent's socket
	// and data directory lock) until the last one is gone.
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if len(tasks) == 0 {
		tasks = []string{fmt.Sprintf("/proc/%d/stat", pid)}
	}
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 && len(s) > i+2 && s[i+2] != 'Z' && s[i+2] != 'X' {
			return true
		}
	}
	return false
}

// ensureAgent starts node k's agent unless it runs, and waits until it
// answers its health check. The agent reads the lab's join token from
// the lab's token file, which its mount namespace shares with the host:
// the token is on no command line.
func (a *agents) ensureAgent(ctx context.Context, k int) (int, error) {
	if pid, ok := a.agentPid(k); ok {
		return pid, a.waitHealthy(ctx, k, pid)
	}
	addr, err := a.nw.Addr(nodeName(k))
	if err != nil {
		return 0, err
	}
	// Nodes start one after another, so the first need not look for a
	// cluster as long as a machine booting with others would.
	args := append([]string{a.binary, "agent",
		"--node-name", nodeName(k),
		"--node-advertise-addr", addr.String(),
		"--join-token-file", a.tokenFile(),
		"--discovery-wait", "1s",
	}, a.args...)
	cmd := a.enter(k, args)
	logf, err := os.OpenFile(filepath.Join(a.nodeDir(k), "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: the agent outlives `ssi lab up` and its terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start agent: %w", err)
	}
	pid := cmd.Process.Pid
	// Reap it if it dies while we wait; otherwise it is left to run.
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	if err := os.WriteFile(a.agentPidFile(k), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return 0, err
	}
	if err := a.waitHealthyOrExit(ctx, k, pid, exited); err != nil {
		return 0, err
	}
	return pid, nil
}

func (a *agents) waitHealthy(ctx context.Context, k, pid int) error {
	return a.waitHealthyOrExit(ctx, k, pid, nil)
}

// waitHealthyOrExit polls the agent's health endpoint until it answers,
// the agent exits, or a deadline passes.
func (a *agents) waitHealthyOrExit(ctx context.Context, k, pid int, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	sock := a.AgentSocket(nodeName(k))
	for {
		if h, err := Health(ctx, sock); err == nil && h.Status == "member" {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("agent exited at start; see %s", filepath.Join(a.nodeDir(k), "agent.log"))
		case <-ctx.Done():
			return fmt.Errorf("agent pid %d did not join the cluster: %w; see %s", pid, ctx.Err(),
				filepath.Join(a.nodeDir(k), "agent.log"))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Healthy asks the agent behind a unix socket for /v1/health.
func Healthy(ctx context.Context, sock string) error {
	_, err := Health(ctx, sock)
	return err
}

// AgentHealth is what an agent's /v1/health says.
type AgentHealth struct {
	Node   string `json:"node"`
	Status string `json:"status"`
}

// Health asks the agent behind a unix socket for /v1/health.
func Health(ctx context.Context, sock string) (*AgentHealth, error) {
	c := http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}, Timeout: 2 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/v1/health", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("health: %s", resp.Status)
	}
	var h AgentHealth
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return nil, fmt.Errorf("health: %w", err)
	}
	return &h, nil
}
