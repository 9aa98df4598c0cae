package jobs

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"ssi/raftstore/raftstoretest"
)

func testRecords(t *testing.T) records {
	return records{dir: filepath.Join(t.TempDir(), "jobs"), log: raftstoretest.Logger(t)}
}

// A record names the process by pid and start time, and is forgotten
// only by the process it names.
func TestRecordsWriteForget(t *testing.T) {
	r := testRecords(t)
	c := sleeper(t)
	r.write(5, c.pid(), true)
	rec, err := r.read(5)
	start, _ := procStart(c.pid())
	if err != nil || rec != (jobRecord{CPID: 5, Pid: c.pid(), Start: start, Arriving: true}) {
		t.Fatalf("read back %+v %v", rec, err)
	}
	// The same cpid came back under another pid: its old process's end
	// must not forget the new record.
	r.forgetOf(5, c.pid()+1)
	if _, err := r.read(5); err != nil {
		t.Fatalf("forgetOf another pid forgot the record: %v", err)
	}
	r.forgetOf(5, c.pid())
	if _, err := r.read(5); !os.IsNotExist(err) {
		t.Fatalf("forgetOf its pid left the record: %v", err)
	}
	r.write(6, c.pid(), false)
	r.forget(6)
	if _, err := r.read(6); !os.IsNotExist(err) {
		t.Fatalf("forget left the record: %v", err)
	}
	// A process that has ended leaves no record.
	gone := sleeper(t)
	_ = gone.cmd.Process.Kill()
	gone.waitEnded(t)
	r.write(7, gone.pid(), false)
	if _, err := r.read(7); !os.IsNotExist(err) {
		t.Fatalf("a record of an ended process: %v", err)
	}
}

// Only records of processes that still run are adopted; the others are
// forgotten.
func TestRecordsRunning(t *testing.T) {
	r := testRecords(t)
	live, ended := sleeper(t), sleeper(t)
	r.write(1, live.pid(), false)
	r.write(2, ended.pid(), false)
	_ = ended.cmd.Process.Kill()
	ended.waitEnded(t)
	// Another process got the pid of 3's: its start time differs.
	b, _ := json.Marshal(jobRecord{CPID: 3, Pid: live.pid(), Start: 1})
	if err := os.WriteFile(filepath.Join(r.dir, "3"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"4": "not json", "8": `{"cpid":9}`, "notes": "x"} {
		if err := os.WriteFile(filepath.Join(r.dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got := r.running()
	if len(got) != 1 || got[0].CPID != 1 {
		t.Fatalf("running: %+v, want only cpid 1", got)
	}
	left, _ := os.ReadDir(r.dir)
	var names []string
	for _, f := range left {
		names = append(names, f.Name())
	}
	if len(names) != 2 || names[0] != "1" || names[1] != "notes" {
		t.Fatalf("left %v, want [1 notes]", names)
	}
}
