package jobs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Every cluster process gets its own cgroup under the agent's (the
// node's), in the hierarchies that account for or limit resources, so
// that what it uses can be read and limited apart from the agent and
// from other jobs, on its home node and wherever it moves.

// jobControllers are the v1 hierarchies a job gets a cgroup in. Not the
// cpu controller: Go programs (1.25 and later) keep their cgroup's CPU
// quota file open, and a job's own cgroup is removed from a node when the
// job leaves it, so the next checkpoint would find an open file that is
// gone. In the node's cgroup, that file exists wherever the job goes. For
// the same reason there are no job cgroups on a unified (v2) hierarchy,
// where cpu.max lives in every cgroup.
var jobControllers = map[string]bool{"cpuacct": true, "memory": true, "pids": true}

// cgroups are the jobs' cgroups under the hierarchies mounted at root
// (/sys/fs/cgroup; a test's own directory in unit tests).
type cgroups struct {
	root string
}

// dirs are the directories of job cpid's cgroup, one per hierarchy, under
// this process's own cgroups. Missing hierarchies are skipped: a job
// without cgroups still runs.
func (c cgroups) dirs(cpid int) []string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil
	}
	name := "ssi-job-" + strconv.Itoa(cpid)
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		if !jobControllers[f[1]] {
			continue
		}
		root := filepath.Join(c.root, f[1])
		if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
			continue
		}
		out = append(out, filepath.Join(root, f[2], name))
	}
	return out
}

// enter creates job cpid's cgroups and moves pids into them.
func (c cgroups) enter(cpid int, pids ...int) error {
	var errs []error
	for _, d := range c.dirs(cpid) {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			errs = append(errs, err)
			continue
		}
		for _, pid := range pids {
			if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil &&
				!errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("%s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// remove removes job cpid's cgroups once they are empty; a task still
// exiting keeps one busy for a moment.
func (c cgroups) remove(cpid int) {
	for _, d := range c.dirs(cpid) {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := syscall.Rmdir(d)
			if err == nil || errors.Is(err, syscall.ENOENT) || !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
