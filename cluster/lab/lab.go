package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"ssi/cluster/transport"
	"ssi/fs/mountinfo"
)

// MaxNodes bounds a lab: addresses are subnet hosts 11 to 10+MaxNodes.
const MaxNodes = 200

// ErrNoLab means the lab has not been brought up.
var ErrNoLab = errors.New("lab is not up (run: ssi lab up --nodes N)")

// ErrNoNode means the name is not a node of the lab.
var ErrNoNode = errors.New("no such node")

// Options configure a lab. Zero values are filled from the lab's record
// when it exists.
type Options struct {
	Name   string // up to 8 lowercase letters or digits
	Dir    string // parent of the lab's own directory
	Subnet string // IPv4 prefix, /24 or wider
	Nodes  int    // for Up
	// CPUQuota (CPUs) and MemLimit (bytes) are each one value for every
	// node or one per node, node1 first; 0: unlimited. nil keeps what
	// the lab's record says.
	CPUQuota []float64
	MemLimit []uint64
	// Binary is the ssi binary run as each node's agent; empty runs no
	// agents (a lab of bare nodes, for tests of lower layers).
	Binary string
	// AgentArgs are extra arguments for every agent.
	AgentArgs []string
	// Out receives progress lines; nil discards them.
	Out io.Writer
}

// Lab is a handle on a lab, built or not. It drives each node's life (Up,
// Start, Kill, Down) and leaves every resource to the embedded type that
// owns it; their exported methods are part of Lab's API.
type Lab struct {
	layout  // directory, record, names of kernel objects
	network // bridge, network namespaces, veths, partitions
	cgroups // each node's cgroups and the processes in them
	mountNS // each node's mount namespace and its pin
	agents  // entering a node, and each node's agent
	opts    Options
	token   string
}

// Open returns a handle on the lab named in opts. It creates nothing.
func Open(opts Options) (*Lab, error) {
	if opts.Name == "" || len(opts.Name) > 8 || strings.ContainsAny(opts.Name, "/ -.") {
		return nil, fmt.Errorf("lab name %q: want 1 to 8 letters or digits", opts.Name)
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	l := &Lab{opts: opts, layout: layout{name: opts.Name, root: filepath.Join(opts.Dir, opts.Name)}}
	if rec, err := l.readRecord(); err == nil {
		// A lab that exists keeps its addresses: `lab start` without the
		// subnet it was made with must not renumber a node.
		if rec.Subnet != "" {
			l.opts.Subnet = rec.Subnet
		}
		if l.opts.Nodes == 0 {
			l.opts.Nodes = rec.Nodes
		}
		if l.opts.Binary == "" {
			l.opts.Binary = rec.Binary
			l.opts.AgentArgs = rec.AgentArgs
		}
		if l.opts.CPUQuota == nil {
			l.opts.CPUQuota = rec.cpuQuotas()
		}
		if l.opts.MemLimit == nil {
			l.opts.MemLimit = rec.MemLimits
		}
		l.token = rec.Token
	}
	if tok, err := l.readToken(); err != nil {
		return nil, fmt.Errorf("lab token: %w", err)
	} else if tok != "" {
		l.token = tok
	}
	// The parts are made from the options as completed by the record.
	l.network = network{layout: l.layout, subnet: l.opts.Subnet}
	l.cgroups = cgroups{lab: l.opts.Name, quotas: l.opts.CPUQuota, mems: l.opts.MemLimit}
	l.mountNS = mountNS{layout: l.layout}
	l.agents = agents{layout: l.layout, cg: l.cgroups, nw: l.network,
		binary: l.opts.Binary, args: l.opts.AgentArgs}
	return l, nil
}

// Token is the join token the lab's agents start with.
func (l *Lab) Token() string { return l.token }

// writeRecord writes the lab's token file, then its record. Both are
// root's only: the token admits a machine to the lab's cluster, and the
// record says how the lab's agents run.
func (l *Lab) writeRecord() error {
	if err := transport.WriteSecretFile(l.tokenFile(), []byte(l.token+"\n")); err != nil {
		return fmt.Errorf("lab token: %w", err)
	}
	b, _ := json.MarshalIndent(record{
		Nodes: l.opts.Nodes, Subnet: l.opts.Subnet, CPUQuotas: l.opts.CPUQuota, MemLimits: l.opts.MemLimit,
		Binary: l.opts.Binary, AgentArgs: l.opts.AgentArgs,
	}, "", "  ")
	return transport.WriteSecretFile(l.recordFile(), append(b, '\n'))
}

// Up builds the lab, or completes it: nodes that are whole are kept (and
// their agents started if they are not running), broken ones are rebuilt,
// and nodes beyond opts.Nodes are removed.
func (l *Lab) Up(ctx context.Context) error {
	if l.opts.Nodes < 1 || l.opts.Nodes > MaxNodes {
		return fmt.Errorf("lab up: --nodes %d: want 1 to %d", l.opts.Nodes, MaxNodes)
	}
	if _, err := l.Addr(nodeName(l.opts.Nodes)); err != nil {
		return err
	}
	if err := l.checkLimits(l.opts.Nodes); err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	if err := os.MkdirAll(l.root, 0o755); err != nil {
		return err
	}
	if l.token == "" {
		t, err := transport.NewToken()
		if err != nil {
			return err
		}
		l.token = t
	}
	if err := l.ensureBridge(); err != nil {
		return err
	}
	if err := l.ensureNSDir(); err != nil {
		return err
	}
	if err := l.writeRecord(); err != nil {
		return err
	}
	for _, k := range l.discoverNodes() {
		if k > l.opts.Nodes {
			fmt.Fprintf(l.opts.Out, "%s: removing (beyond --nodes %d)\n", nodeName(k), l.opts.Nodes)
			if err := l.teardownNode(k, true); err != nil {
				return err
			}
		}
	}
	for k := 1; k <= l.opts.Nodes; k++ {
		if err := l.ensureNode(ctx, k); err != nil {
			return fmt.Errorf("%s: %w", nodeName(k), err)
		}
	}
	return nil
}

// ensureNode builds node k unless it is whole, then starts its agent.
func (l *Lab) ensureNode(ctx context.Context, k int) error {
	if problem := l.nodeProblem(k); problem != "" {
		if l.nodeExists(k) {
			fmt.Fprintf(l.opts.Out, "%s: rebuilding (%s)\n", nodeName(k), problem)
			if err := l.teardownNode(k, false); err != nil {
				return err
			}
		}
		if err := l.buildNode(k); err != nil {
			return err
		}
	}
	if err := l.applyLimits(k); err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	addr, _ := l.Addr(nodeName(k))
	if l.opts.Binary == "" {
		fmt.Fprintf(l.opts.Out, "%s: %s netns %s (no agent)\n", nodeName(k), addr, l.netnsName(k))
		return nil
	}
	// A lab made by an older version kept its token in lab.json only.
	if _, err := os.Stat(l.tokenFile()); errors.Is(err, os.ErrNotExist) && l.token != "" {
		if err := transport.WriteSecretFile(l.tokenFile(), []byte(l.token+"\n")); err != nil {
			return err
		}
	}
	pid, err := l.ensureAgent(ctx, k)
	if err != nil {
		return err
	}
	fmt.Fprintf(l.opts.Out, "%s: %s netns %s agent pid %d\n", nodeName(k), addr, l.netnsName(k), pid)
	return nil
}

// buildNode creates node k's state directory, network, mount namespace and
// cgroups. On failure the caller's Down (or the next Up) removes the parts.
func (l *Lab) buildNode(k int) error {
	for _, d := range []string{"run", "data"} {
		if err := os.MkdirAll(filepath.Join(l.nodeDir(k), d), 0o755); err != nil {
			return err
		}
	}
	if err := l.buildNet(k); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	if err := l.buildMountNS(k); err != nil {
		return fmt.Errorf("mount namespace: %w", err)
	}
	if err := l.buildCgroups(k); err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	return nil
}

// nodeProblem says what is missing in node k, or "" if it is whole.
func (l *Lab) nodeProblem(k int) string {
	switch {
	case !netnsExists(l.netnsName(k)):
		return "no network namespace"
	case !linkExists(l.hostVeth(k)):
		return "no veth"
	case !mountinfo.Mounted(l.mntPin(k)):
		return "no mount namespace"
	case !l.cgroupsExist(k):
		return "no cgroup"
	}
	return ""
}

// nodeExists says whether any part of node k exists.
func (l *Lab) nodeExists(k int) bool {
	_, err := os.Stat(l.nodeDir(k))
	return err == nil || netnsExists(l.netnsName(k)) || linkExists(l.hostVeth(k)) ||
		mountinfo.Mounted(l.mntPin(k)) || l.anyCgroupExists(k)
}

// discoverNodes finds the indexes of every node with any part left, from
// the kernel's and the file system's view rather than the lab's record.
func (l *Lab) discoverNodes() []int {
	seen := map[int]bool{}
	for _, ns := range listNetns() {
		if rest, ok := strings.CutPrefix(ns, l.opts.Name+"-"); ok {
			if k, ok := nodeIndex(rest); ok {
				seen[k] = true
			}
		}
	}
	if entries, err := os.ReadDir(l.root); err == nil {
		for _, e := range entries {
			if k, ok := nodeIndex(e.Name()); ok {
				seen[k] = true
			}
		}
	}
	for _, name := range listLinks() {
		if rest, ok := strings.CutPrefix(name, l.opts.Name+"-v"); ok {
			if k, err := strconv.Atoi(rest); err == nil && k >= 1 && k <= MaxNodes {
				seen[k] = true
			}
		}
	}
	for _, k := range l.cgroupNodes() {
		seen[k] = true
	}
	var ks []int
	for k := range seen {
		ks = append(ks, k)
	}
	sort.Ints(ks)
	return ks
}

// Down removes every process, mount, namespace, cgroup, interface and
// directory of the lab. It tolerates a half-built or already removed lab.
func (l *Lab) Down(ctx context.Context) error {
	var errs []error
	for _, k := range l.discoverNodes() {
		if err := l.teardownNode(k, true); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", nodeName(k), err))
		}
	}
	if err := l.removeBridge(); err != nil {
		errs = append(errs, err)
	}
	if err := l.removeNSDir(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(l.root); err != nil {
			errs = append(errs, err)
		}
		l.removeCgroupParents()
	}
	return errors.Join(errs...)
}

// teardownNode kills node k's processes and removes its namespaces,
// interfaces and cgroups; with purge, its state directory too.
func (l *Lab) teardownNode(k int, purge bool) error {
	var errs []error
	if err := l.killCgroup(k); err != nil {
		errs = append(errs, err)
	}
	if err := l.removeMountNS(k); err != nil {
		errs = append(errs, err)
	}
	if err := l.removeNet(k); err != nil {
		errs = append(errs, err)
	}
	if err := l.removeCgroups(k); err != nil {
		errs = append(errs, err)
	}
	_ = os.Remove(filepath.Join(l.nodeDir(k), "agent.pid"))
	if purge {
		if err := os.RemoveAll(l.nodeDir(k)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
