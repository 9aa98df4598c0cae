package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// A node's limits are its cgroups' CPU quota and memory limit. Each is a
// list in the lab's record: one value for every node, or one per node, so
// that nodes of one lab can differ (a fast node and slow ones, a node
// short of memory). They are written whenever a node is brought up or
// started, so `lab up` with new values changes a running lab, and `lab
// start` after a crash finds them as they were.

// limitOf is node k's value in a list of one value for every node or one
// per node; 0 (no limit) when the list is empty.
func limitOf[T any](list []T, k int) T {
	var zero T
	switch {
	case len(list) == 1:
		return list[0]
	case k >= 1 && k <= len(list):
		return list[k-1]
	}
	return zero
}

// checkLimits refuses lists that are neither one value nor one per node.
func (c *cgroups) checkLimits(nodes int) error {
	if n := len(c.quotas); n > 1 && n != nodes {
		return fmt.Errorf("--cpu-quota has %d values for %d nodes: give one, or one per node", n, nodes)
	}
	if n := len(c.mems); n > 1 && n != nodes {
		return fmt.Errorf("--mem-limit has %d values for %d nodes: give one, or one per node", n, nodes)
	}
	return nil
}

// limits are node k's CPU quota and memory limit (0: none).
func (c *cgroups) limits(k int) (cpus float64, mem uint64) {
	return limitOf(c.quotas, k), limitOf(c.mems, k)
}

// applyLimits writes node k's limits into its cgroups, lifting the
// ones that are 0.
func (c *cgroups) applyLimits(k int) error {
	cpus, mem := c.limits(k)
	return errors.Join(c.setCPUQuota(k, cpus), c.setMemLimit(k, mem))
}

// setCPUQuota lets node k use cpus CPUs' worth of time per period.
func (c *cgroups) setCPUQuota(k int, cpus float64) error {
	const period = 100000
	quota := strconv.Itoa(int(cpus * period))
	v2 := quota + " " + strconv.Itoa(period)
	if cpus <= 0 {
		quota, v2 = "-1", "max "+strconv.Itoa(period)
	}
	for _, d := range c.cgroupDirs(k) {
		if exists(filepath.Join(d, "cpu.max")) {
			return os.WriteFile(filepath.Join(d, "cpu.max"), []byte(v2), 0o644)
		}
		if exists(filepath.Join(d, "cpu.cfs_quota_us")) {
			if err := os.WriteFile(filepath.Join(d, "cpu.cfs_period_us"), []byte(strconv.Itoa(period)), 0o644); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(d, "cpu.cfs_quota_us"), []byte(quota), 0o644)
		}
	}
	if cpus <= 0 {
		return nil
	}
	return errors.New("no cpu controller: cannot set --cpu-quota")
}

// setMemLimit caps node k's memory, page cache included, at bytes: the
// kernel reclaims its cache, then OOM-kills within the node, as on a
// machine of that size.
func (c *cgroups) setMemLimit(k int, bytes uint64) error {
	v1, v2 := strconv.FormatUint(bytes, 10), strconv.FormatUint(bytes, 10)
	if bytes == 0 {
		v1, v2 = "-1", "max"
	}
	for _, d := range c.cgroupDirs(k) {
		if f := filepath.Join(d, "memory.max"); exists(f) {
			return writeLimit(f, v2)
		}
		if f := filepath.Join(d, "memory.limit_in_bytes"); exists(f) {
			return writeLimit(f, v1)
		}
	}
	if bytes == 0 {
		return nil
	}
	return errors.New("no memory controller: cannot set --mem-limit")
}

// writeLimit explains the kernel's refusal to set a limit below what
// the node already uses.
func writeLimit(file, v string) error {
	err := os.WriteFile(file, []byte(v), 0o644)
	if err != nil {
		return fmt.Errorf("%s = %s (below what the node uses now?): %w", file, v, err)
	}
	return nil
}

// memUsed is what node k's memory cgroup charges now, page cache
// included (0 if unknown).
func (c *cgroups) memUsed(k int) uint64 {
	for _, d := range c.cgroupDirs(k) {
		for _, f := range []string{"memory.current", "memory.usage_in_bytes"} {
			if b, err := os.ReadFile(filepath.Join(d, f)); err == nil {
				n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
				return n
			}
		}
	}
	return 0
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
