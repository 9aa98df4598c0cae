// Package mountinfo answers one question from /proc/self/mountinfo: is
// something mounted at this path, in the caller's mount namespace? The
// agent asks it of /cluster (a stale mount to replace), the lab of its
// namespace pins.
package mountinfo

import (
	"bufio"
	"os"
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
