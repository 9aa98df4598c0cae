package migrate

import (
	"slices"
	"strings"
	"testing"

	"ssi/cluster/jobns"
	"ssi/fs/mountinfo"
)

// A job's mount namespace on a node where something had mounted below
// /tmp before the job started: the job's tmpfs on /tmp covers it.
const jobMountinfo = `601 600 254:0 / / rw,relatime - ext4 /dev/vda rw
602 601 0:48 / /tmp/TestX/001/cluster rw,nosuid,nodev,relatime - fuse.cluster ssi rw
603 602 0:49 / /tmp/TestX/001/cluster/deeper rw - tmpfs none rw
604 601 0:50 / /cluster rw,nosuid,nodev,relatime - fuse.cluster ssi rw
605 601 0:22 / /sys rw,relatime - sysfs sysfs rw
606 605 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw
607 601 0:51 / /tmp rw,nosuid - tmpfs tmpfs rw
608 607 0:52 / /tmp/mine rw - tmpfs tmpfs rw
609 601 0:53 / /proc rw - proc proc rw
610 601 0:54 / /var/lib/with\040space rw - tmpfs tmpfs rw
`

func TestHiddenMounts(t *testing.T) {
	ms, err := mountinfo.Parse(strings.NewReader(jobMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	got := hidden(ms)
	want := []string{"/tmp/TestX/001/cluster", "/tmp/TestX/001/cluster/deeper"}
	if !slices.Equal(got, want) {
		t.Fatalf("hidden: %q, want %q", got, want)
	}
	if ms[9].Mountpoint != "/var/lib/with space" {
		t.Fatalf("unescaped: %q", ms[9].Mountpoint)
	}
	// A path with a visible mount stays, even if an older one there is
	// covered: CRIU skips by path.
	ms = append(ms, jobns.Mount{ID: 611, Parent: 607, Mountpoint: "/tmp/TestX/001/cluster"})
	if got := hidden(ms); len(got) != 1 || got[0] != "/tmp/TestX/001/cluster/deeper" {
		t.Fatalf("with a visible mount on the same path: %q", got)
	}
	if got := withoutPaths([]string{"/cluster", "/tmp/TestX/001/cluster", "/sys"}, want); !slices.Equal(got, []string{"/cluster", "/sys"}) {
		t.Fatalf("withoutPaths: %q", got)
	}
}
