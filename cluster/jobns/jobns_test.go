package jobns

import (
	"os"
	"testing"

	"ssi/fs/mountinfo"
)

func TestParseMountinfo(t *testing.T) {
	for _, c := range []struct {
		line string
		want Mount
		ok   bool
	}{
		{"51 49 0:22 / /proc rw,nosuid shared:12 - proc proc rw", Mount{ID: 51, Parent: 49, Mountpoint: "/proc", FSType: "proc", Dev: "0:22"}, true},
		{"73 49 0:50 / /cluster rw - fuse.ssi ssi rw,user_id=0", Mount{ID: 73, Parent: 49, Mountpoint: "/cluster", FSType: "fuse.ssi", Dev: "0:50"}, true},
		{`80 49 0:51 / /mnt/a\040b rw - tmpfs tmpfs rw`, Mount{ID: 80, Parent: 49, Mountpoint: "/mnt/a b", FSType: "tmpfs", Dev: "0:51"}, true},
		{"garbage", Mount{}, false},
		{"1 2 3 4 5 6 7", Mount{}, false},
	} {
		got, ok := mountinfo.ParseLine(c.line)
		if ok != c.ok || got != c.want {
			t.Errorf("mountinfo.ParseLine(%q) = %+v, %v; want %+v, %v", c.line, got, ok, c.want, c.ok)
		}
	}
}

func TestOwnAndValidNodeMount(t *testing.T) {
	if !Own("/tmp", "tmpfs") || Own("/tmp", "ext4") || Own("/cluster", "fuse.ssi") {
		t.Fatal("Own mixes up the job's mounts and the node's")
	}
	here := map[string]bool{"/sys": true, "/cluster": true, "/tmp": true}
	for mp, ok := range map[string]bool{
		"/sys": true, "/cluster": true, "/etc": false, "relative": false, "/sys/../etc": false,
		"/": false, "/tmp": false,
	} {
		if err := ValidNodeMount(mp, here); (err == nil) != ok {
			t.Errorf("ValidNodeMount(%q) = %v, want ok=%v", mp, err, ok)
		}
	}
}

// A process in the caller's own mount namespace is not a job: moving it
// as one would bind the node's mounts over themselves.
func TestNodeMountsOfANonJob(t *testing.T) {
	if _, err := NodeMounts(os.Getpid()); err != ErrNotAJob {
		t.Fatalf("NodeMounts(self) = %v, want ErrNotAJob", err)
	}
	if ms, err := Mounts(os.Getpid()); err != nil || len(ms) == 0 {
		t.Fatalf("Mounts(self) = %v, %v", ms, err)
	}
}
