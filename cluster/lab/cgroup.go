package lab

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// v1Controllers are the cgroup v1 hierarchies a node gets a cgroup in:
// CPU for its quota and accounting, memory and pids for accounting and
// limits, freezer so that a whole node can be stopped.
var v1Controllers = []string{"cpu", "cpuacct", "memory", "pids", "freezer"}

// cgroupRoots returns the mount points of the hierarchies the lab uses
// (cgroup v1's wanted controllers, or the cgroup v2 root), and whether it
// is v2.
func cgroupRoots() ([]string, bool) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil, false
	}
	defer f.Close()
	var v1 []string
	v2 := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			continue
		}
		switch fields[2] {
		case "cgroup":
			for _, opt := range strings.Split(fields[3], ",") {
				if contains(v1Controllers, opt) {
					if !contains(v1, fields[1]) {
						v1 = append(v1, fields[1])
					}
					break
				}
			}
		case "cgroup2":
			if fields[1] == "/sys/fs/cgroup" {
				v2 = fields[1]
			}
		}
	}
	if len(v1) > 0 {
		sort.Strings(v1)
		return v1, false
	}
	if v2 != "" {
		return []string{v2}, true
	}
	return nil, false
}

// cgroups owns each node's cgroups, one per hierarchy under
// ssi-lab/<lab>, their limits (limits.go), and the processes in them:
// listing and killing a node's processes goes through its cgroups.
type cgroups struct {
	lab    string    // the lab's name
	quotas []float64 // CPUs, one for every node or one per node; 0: unlimited
	mems   []uint64  // memory bytes, likewise
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (c *cgroups) cgroupParent(root string) string {
	return filepath.Join(root, "ssi-lab", c.lab)
}

// cgroupDirs are node k's cgroups, one per hierarchy.
func (c *cgroups) cgroupDirs(k int) []string {
	roots, _ := cgroupRoots()
	var dirs []string
	for _, r := range roots {
		dirs = append(dirs, filepath.Join(c.cgroupParent(r), nodeName(k)))
	}
	return dirs
}

func (c *cgroups) buildCgroups(k int) error {
	roots, v2 := cgroupRoots()
	if len(roots) == 0 {
		return errors.New("no cgroup hierarchy mounted under /sys/fs/cgroup")
	}
	if v2 {
		// Controllers must be enabled on every level above the node.
		for _, d := range []string{roots[0], filepath.Join(roots[0], "ssi-lab"), c.cgroupParent(roots[0])} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
			_ = os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte("+cpu +memory +pids"), 0o644)
		}
	}
	for _, d := range c.cgroupDirs(k) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	return nil
}

func (c *cgroups) cgroupsExist(k int) bool {
	dirs := c.cgroupDirs(k)
	for _, d := range dirs {
		if _, err := os.Stat(d); err != nil {
			return false
		}
	}
	return len(dirs) > 0
}

func (c *cgroups) anyCgroupExists(k int) bool {
	for _, d := range c.cgroupDirs(k) {
		if _, err := os.Stat(d); err == nil {
			return true
		}
	}
	return false
}

// cgroupNodes lists the node indexes that have a cgroup left.
func (c *cgroups) cgroupNodes() []int {
	roots, _ := cgroupRoots()
	var ks []int
	for _, r := range roots {
		entries, _ := os.ReadDir(c.cgroupParent(r))
		for _, e := range entries {
			if k, ok := nodeIndex(e.Name()); ok && e.IsDir() {
				ks = append(ks, k)
			}
		}
	}
	return ks
}

// cgroupPids lists every process in node k's cgroups and their children.
func (c *cgroups) cgroupPids(k int) []int {
	seen := map[int]bool{}
	for _, d := range c.cgroupDirs(k) {
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil || !e.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	var pids []int
	for p := range seen {
		pids = append(pids, p)
	}
	sort.Ints(pids)
	return pids
}

// killCgroup SIGKILLs everything in node k until nothing is left: a
// process may fork while it is being killed.
func (c *cgroups) killCgroup(k int) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		pids := c.cgroupPids(k)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v of %s survive SIGKILL", pids, nodeName(k))
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// removeCgroups removes node k's cgroups, innermost first. A cgroup whose
// last task is still exiting is busy for a moment: retry until a deadline.
func (c *cgroups) removeCgroups(k int) error {
	var errs []error
	for _, d := range c.cgroupDirs(k) {
		var dirs []string
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := rmdirRetry(dirs[i]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func rmdirRetry(d string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := syscall.Rmdir(d)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("rmdir %s: %w", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// removeCgroupParents removes the lab's cgroup parents if they are empty.
func (c *cgroups) removeCgroupParents() {
	roots, _ := cgroupRoots()
	for _, r := range roots {
		_ = syscall.Rmdir(c.cgroupParent(r))
		_ = syscall.Rmdir(filepath.Join(r, "ssi-lab"))
	}
}
