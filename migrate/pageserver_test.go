package migrate_test

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"ssi/migrate"
)

// Pages sent through a page server while the dump runs, the rest of the
// images copied after: the restored counter goes on from where it was.
func TestDumpThroughPageServer(t *testing.T) {
	needCRIU(t)
	counts := filepath.Join(t.TempDir(), "counts")
	start, out := startLocalCounter(t, counts)
	defer func() { _ = start.Process.Kill(); _ = start.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	waitFor(t, "the counter to count", func() bool { return len(readCounts(t, counts)) > 3 })

	src, dst := t.TempDir(), t.TempDir()
	c := migrate.New(criuConfig(), nil)
	dumpToPageServer(t, c, pid, src, dst)
	before := readCounts(t, counts)
	copyImages(t, src, dst)
	r, err := c.Restore(context.Background(), migrate.RestoreOptions{Dir: dst})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = syscall.Kill(r.Pid, syscall.SIGKILL)
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(r.Pid, &ws, 0, nil)
	}()
	last := before[len(before)-1]
	waitFor(t, "the restored counter to go on", func() bool {
		c := readCounts(t, counts)
		return len(c) > len(before)+2
	})
	after := readCounts(t, counts)
	if after[len(before)] != last+1 {
		t.Fatalf("after %d the restored counter wrote %d", last, after[len(before)])
	}
}

// startLocalCounter starts the counter helper in this namespace, writing
// to counts; it prints its pid on the returned pipe.
func startLocalCounter(t *testing.T, counts string) (*exec.Cmd, io.Reader) {
	t.Helper()
	start := exec.Command(os.Args[0])
	start.Env = append(os.Environ(), "SSI_MIGRATE_HELPER=start", "SSI_COUNTER_FILE="+counts)
	out, err := start.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := start.Start(); err != nil {
		t.Fatal(err)
	}
	return start, out
}

// dumpToPageServer dumps pid into src with its pages sent over a socket
// pair to a page server writing into dst.
func dumpToPageServer(t *testing.T, c *migrate.Client, pid int, src, dst string) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	dumpEnd, serverEnd := os.NewFile(uintptr(fds[0]), "dump"), os.NewFile(uintptr(fds[1]), "server")
	if _, err := c.StartPageServer(context.Background(), dst, serverEnd); err != nil {
		t.Fatal(err)
	}
	serverEnd.Close()
	if _, err := c.Dump(context.Background(), migrate.DumpOptions{Pid: pid, Dir: src, PageServer: dumpEnd}); err != nil {
		t.Fatal(err)
	}
	dumpEnd.Close()
}

// copyImages copies the images dump left in src to dst, where the page
// server wrote the pages: none may be in src.
func copyImages(t *testing.T, src, dst string) {
	t.Helper()
	ents, _ := os.ReadDir(src)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "pages-") {
			t.Fatalf("%s was written locally: the pages did not go to the page server", e.Name())
		}
		copyFile(t, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()))
	}
	if m, _ := filepath.Glob(filepath.Join(dst, "pages-*.img")); len(m) == 0 {
		t.Fatal("the page server wrote no pages")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
}
