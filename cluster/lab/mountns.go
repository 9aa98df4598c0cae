package lab

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"ssi/fs/mountinfo"
)

// Paths that each node sees as its own: the agent's defaults (socket,
// state) then work unchanged in every node.
var nodeBinds = []struct{ sub, target string }{
	{"run", "/run/ssi"},
	{"data", "/var/lib/ssi"},
}

// mountNS owns each node's mount namespace, pinned on a file in the lab's
// ns directory, and that directory's private mount.
type mountNS struct {
	layout
}

// ensureNSDir makes the directory holding mount namespace pins a private
// mount of its own: the kernel refuses to pin a namespace on a shared one.
func (m *mountNS) ensureNSDir() error {
	d := m.nsDir()
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	if !mountinfo.Mounted(d) {
		if err := unix.Mount(d, d, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s: %w", d, err)
		}
	}
	if err := unix.Mount("", d, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", d, err)
	}
	return nil
}

// buildMountNS creates node k's mount namespace, pinned on a file, with
// the node's own /run/ssi and /var/lib/ssi. Mounts inside it (such as the
// agent's /cluster) stay inside it.
func (m *mountNS) buildMountNS(k int) error {
	for _, b := range nodeBinds {
		if err := os.MkdirAll(b.target, 0o755); err != nil {
			return err
		}
	}
	pin := m.mntPin(k)
	if err := os.WriteFile(pin, nil, 0o644); err != nil {
		return err
	}
	var script strings.Builder
	// The new namespace starts as a copy of the host's, including the
	// pins of the other nodes' namespaces: drop them, so that a node holds
	// no other node alive and sees no other node's namespaces.
	fmt.Fprintf(&script, "umount -l %s 2>/dev/null; umount -l /run/netns 2>/dev/null; "+
		"mount -t tmpfs -o size=1m,mode=755 ssi-netns /run/netns 2>/dev/null; ", shellQuote(m.nsDir()))
	for _, b := range nodeBinds {
		fmt.Fprintf(&script, "mount --bind %s %s && ", shellQuote(filepath.Join(m.nodeDir(k), b.sub)), b.target)
	}
	script.WriteString("true")
	var stderr bytes.Buffer
	cmd := exec.Command("unshare", "--mount="+pin, "--propagation", "private", "sh", "-c", script.String())
	cmd.Stderr = &stderr
	cmd.Dir = "/"
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("unshare: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// removeMountNS unpins node k's mount namespace and removes its pin.
func (m *mountNS) removeMountNS(k int) error {
	var err error
	if mountinfo.Mounted(m.mntPin(k)) {
		err = unmount(m.mntPin(k))
	}
	_ = os.Remove(m.mntPin(k))
	return err
}

// removeNSDir unmounts the directory of the pins.
func (m *mountNS) removeNSDir() error {
	if !mountinfo.Mounted(m.nsDir()) {
		return nil
	}
	return unmount(m.nsDir())
}

func unmount(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	return nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
