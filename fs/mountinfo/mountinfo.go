// Package mountinfo reads mount tables (/proc/PID/mountinfo): whether
// something is mounted at a path in the caller's mount namespace (the
// agent asks it of /cluster, a stale mount to replace; the lab of its
// namespace pins), and a process's whole table (a job's mounts, which a
// move carries or leaves to the node; see cluster/jobns).
package mountinfo

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Mounted reports whether path is some mount's target.
func Mounted(path string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescape(fields[4]) == path {
			return true
		}
	}
	return false
}

// unescape undoes mountinfo's octal escapes of space, tab, newline and
// backslash.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// Mount is one line of a mount table.
type Mount struct {
	ID, Parent int
	Mountpoint string
	FSType     string
	Dev        string // MAJ:MIN of its file system: one per devpts instance
}

// Of reads the mount table of pid's mount namespace.
func Of(pid int) ([]Mount, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}

// Parse reads a mountinfo file; lines it cannot read are skipped.
func Parse(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if m, ok := ParseLine(sc.Text()); ok {
			out = append(out, m)
		}
	}
	return out, sc.Err()
}

// ParseLine reads "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS] - TYPE SRC SUPER".
func ParseLine(line string) (Mount, bool) {
	f := strings.Fields(line)
	if len(f) < 7 {
		return Mount{}, false
	}
	id, err1 := strconv.Atoi(f[0])
	parent, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return Mount{}, false
	}
	m := Mount{ID: id, Parent: parent, Dev: f[2], Mountpoint: unescape(f[4])}
	for i := 6; i < len(f)-1; i++ {
		if f[i] == "-" {
			m.FSType = f[i+1]
			return m, true
		}
	}
	return Mount{}, false
}
