package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// ProbeNamespaces proves that this machine lets us create the network,
// mount and PID namespaces that lab nodes and cluster processes live in,
// and that the tools the lab drives are there.
func ProbeNamespaces() error {
	for _, tool := range []string{"ip", "nsenter", "unshare", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (install iproute2 and util-linux: make setup)", tool)
		}
	}
	var stderr bytes.Buffer
	cmd := exec.Command("unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc", "true")
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("unshare --net --mount --pid: %v: %s (run as root)", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// ProbeCgroups proves that we can create and remove a cgroup in every
// hierarchy the lab uses, and says which version they are.
func ProbeCgroups() (string, error) {
	roots, v2 := cgroupRoots()
	if len(roots) == 0 {
		return "", errors.New("no cgroup hierarchy mounted under /sys/fs/cgroup")
	}
	for _, r := range roots {
		d := filepath.Join(r, fmt.Sprintf("ssi-doctor-%d", os.Getpid()))
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", fmt.Errorf("create a cgroup in %s: %w (run as root)", r, err)
		}
		if err := syscall.Rmdir(d); err != nil {
			return "", fmt.Errorf("remove cgroup %s: %w", d, err)
		}
	}
	if v2 {
		return "cgroup v2 at " + roots[0], nil
	}
	return "cgroup v1: " + strings.Join(roots, " "), nil
}
