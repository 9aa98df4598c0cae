package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"
)

// Command returns a command that runs args inside node: in its network and
// mount namespaces and its cgroup, in the caller's working directory. The
// caller sets stdio and runs it.
func (l *Lab) Command(node string, args ...string) (*exec.Cmd, error) {
	k, err := l.node(node)
	if err != nil {
		return nil, err
	}
	if len(args) == 0 {
		return nil, errors.New("lab exec: no command")
	}
	if p := l.nodeProblem(k); p != "" {
		return nil, fmt.Errorf("%s is down (%s): ssi lab start %s", node, p, node)
	}
	return l.enter(k, args), nil
}

// Kill crashes node: SIGKILL to its agent and everything else in its
// cgroup. Its namespaces and state directory stay, for Start.
func (l *Lab) Kill(node string) error {
	k, err := l.node(node)
	if err != nil {
		return err
	}
	if err := l.killCgroup(k); err != nil {
		return err
	}
	_ = os.Remove(l.agentPidFile(k))
	return nil
}

// Start brings a killed node back with its state directory: missing parts
// are rebuilt and the agent started.
func (l *Lab) Start(ctx context.Context, node string) error {
	k, err := l.node(node)
	if err != nil {
		return err
	}
	return l.ensureNode(ctx, k)
}

// NodeStatus is one node as Status sees it.
type NodeStatus struct {
	Name        string `json:"name"`
	Addr        string `json:"addr"`
	Netns       string `json:"netns"`
	Whole       bool   `json:"whole"`
	Problem     string `json:"problem,omitempty"`
	Partitioned bool   `json:"partitioned"`
	AgentPid    int    `json:"agent_pid,omitempty"`
	AgentUp     bool   `json:"agent_up"`
	Procs       int    `json:"procs"`
	// CPUQuota (CPUs) and MemLimit (bytes) are its limits, 0 for none;
	// MemUsed is what its memory cgroup charges now.
	CPUQuota float64 `json:"cpu_quota"`
	MemLimit uint64  `json:"mem_limit"`
	MemUsed  uint64  `json:"mem_used"`
}

// Status reports every node of the lab.
func (l *Lab) Status(ctx context.Context) ([]NodeStatus, error) {
	names, err := l.Nodes()
	if err != nil {
		return nil, err
	}
	var out []NodeStatus
	for _, n := range names {
		k, _ := nodeIndex(n)
		addr, _ := l.Addr(n)
		st := NodeStatus{Name: n, Addr: addr.String(), Netns: l.netnsName(k)}
		st.Problem = l.nodeProblem(k)
		st.Whole = st.Problem == ""
		st.Partitioned = l.partitioned(k)
		if pid, ok := l.agentPid(k); ok {
			st.AgentPid = pid
			hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			st.AgentUp = Healthy(hctx, l.AgentSocket(n)) == nil
			cancel()
		}
		st.Procs = len(l.cgroupPids(k))
		st.CPUQuota, st.MemLimit = l.limits(k)
		st.MemUsed = l.memUsed(k)
		out = append(out, st)
	}
	return out, nil
}
