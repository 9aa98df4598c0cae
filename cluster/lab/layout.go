package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// record is what Up leaves in lab.json so that later commands (exec, kill,
// start) act on the lab as it was built.
type record struct {
	Nodes     int       `json:"nodes"`
	Subnet    string    `json:"subnet"`
	CPUQuotas []float64 `json:"cpu_quotas,omitempty"`
	MemLimits []uint64  `json:"mem_limits,omitempty"`
	// CPUQuota is the one quota of every node, in labs made before
	// quotas per node.
	CPUQuota  float64  `json:"cpu_quota,omitempty"`
	Binary    string   `json:"binary"`
	AgentArgs []string `json:"agent_args"`
	// Token is where labs made by older versions kept the join token;
	// it now lives in its own file (layout.tokenFile), and a record
	// rewritten drops it.
	Token string `json:"token,omitempty"`
}

// cpuQuotas are the record's CPU quotas, from either form.
func (r *record) cpuQuotas() []float64 {
	if r.CPUQuotas == nil && r.CPUQuota > 0 {
		return []float64{r.CPUQuota}
	}
	return r.CPUQuotas
}

// layout owns where a lab's things are and what they are called: the lab's
// directory, the record in it, and the names of the lab's kernel objects.
// It creates nothing; it is fixed when the lab is opened.
type layout struct {
	name string // the lab's name
	root string // the lab's directory
}

// Name is the lab's name.
func (ly *layout) Name() string { return ly.name }

// Root is the lab's directory.
func (ly *layout) Root() string { return ly.root }

func (ly *layout) readRecord() (*record, error) {
	b, err := os.ReadFile(ly.recordFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoLab
	}
	if err != nil {
		return nil, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("lab record %s: %w", ly.recordFile(), err)
	}
	return &r, nil
}

// Nodes lists the lab's node names, node1..nodeN, from its record.
func (ly *layout) Nodes() ([]string, error) {
	rec, err := ly.readRecord()
	if err != nil {
		return nil, err
	}
	var names []string
	for k := 1; k <= rec.Nodes; k++ {
		names = append(names, nodeName(k))
	}
	return names, nil
}

func nodeName(k int) string { return "node" + strconv.Itoa(k) }

// nodeIndex parses "nodeK".
func nodeIndex(name string) (int, bool) {
	k, err := strconv.Atoi(strings.TrimPrefix(name, "node"))
	if !strings.HasPrefix(name, "node") || err != nil || k < 1 || k > MaxNodes {
		return 0, false
	}
	return k, true
}

// node checks that name is a node of the built lab.
func (ly *layout) node(name string) (int, error) {
	rec, err := ly.readRecord()
	if err != nil {
		return 0, err
	}
	k, ok := nodeIndex(name)
	if !ok || k > rec.Nodes {
		return 0, fmt.Errorf("%w %q in lab %s (nodes node1..node%d)", ErrNoNode, name, ly.name, rec.Nodes)
	}
	return k, nil
}

// Names of the lab's kernel objects. Interface names stay within Linux's
// 15 bytes because lab names have at most 8.
func (ly *layout) netnsName(k int) string { return fmt.Sprintf("%s-node%d", ly.name, k) }
func (ly *layout) bridge() string         { return ly.name + "-br" }
func (ly *layout) hostVeth(k int) string  { return fmt.Sprintf("%s-v%d", ly.name, k) }
func (ly *layout) peerVeth(k int) string  { return fmt.Sprintf("%s-p%d", ly.name, k) }
func (ly *layout) nsDir() string          { return filepath.Join(ly.root, "ns") }
func (ly *layout) mntPin(k int) string    { return filepath.Join(ly.nsDir(), nodeName(k)+".mnt") }
func (ly *layout) nodeDir(k int) string   { return filepath.Join(ly.root, nodeName(k)) }

// tokenFile holds the lab's join token, mode 0600: the agents read it
// (join_token_file), so that the token is on no command line.
func (ly *layout) tokenFile() string { return filepath.Join(ly.root, "join-token") }

// recordFile is the lab's record, lab.json.
func (ly *layout) recordFile() string { return filepath.Join(ly.root, "lab.json") }

// readToken reads the lab's join token: "" if the lab has none yet.
func (ly *layout) readToken() (string, error) {
	b, err := os.ReadFile(ly.tokenFile())
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	return strings.TrimSpace(string(b)), err
}
