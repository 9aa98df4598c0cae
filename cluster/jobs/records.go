package jobs

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

	"ssi/migrate"
)

// An agent that restarts (upgraded, crashed, killed) must not lose the
// cluster processes running on its node: they outlive it, re-parented
// to the machine's init. Each job is recorded in data_dir/jobs; a new
// agent adopts the records whose process still runs, resolves moves it
// was in the middle of, and tells the cluster which ones are gone.

// jobRecord identifies a job's init across agent restarts: a pid and
// that process's start time, so a recycled pid is not mistaken for it.
type jobRecord struct {
	CPID  int    `json:"cpid"`
	Pid   int    `json:"pid"`
	Start uint64 `json:"start"` // clock ticks after boot (/proc/PID/stat)
	// Arriving: restored here, stopped, before the move's outcome was
	// known. A new agent settles the move and resumes or kills it.
	Arriving bool `json:"arriving,omitempty"`
}

// records are the job records in one directory, one file per cpid.
type records struct {
	dir string
	log *slog.Logger
}

// write writes cpid's record; a job without one would be lost by the
// next agent, so failures are logged loudly.
func (r records) write(cpid, pid int, arriving bool) {
	start, ok := procStart(pid)
	if !ok {
		return
	}
	b, _ := json.Marshal(jobRecord{CPID: cpid, Pid: pid, Start: start, Arriving: arriving})
	tmp := filepath.Join(r.dir, fmt.Sprintf(".%d.tmp", cpid))
	err := os.MkdirAll(r.dir, 0o700)
	if err == nil {
		err = os.WriteFile(tmp, b, 0o600)
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(r.dir, strconv.Itoa(cpid)))
	}
	if err != nil {
		r.log.Error("recording a job for the next agent", "cpid", cpid, "err", err)
	}
}

func (r records) forget(cpid int) {
	_ = os.Remove(filepath.Join(r.dir, strconv.Itoa(cpid)))
}

// forgetOf forgets cpid's record only if it is pid's: the same cpid may
// have come back to this node under another pid meanwhile.
func (r records) forgetOf(cpid, pid int) {
	if rec, err := r.read(cpid); err == nil && rec.Pid != pid {
		return
	}
	r.forget(cpid)
}

func (r records) read(cpid int) (jobRecord, error) {
	var rec jobRecord
	b, err := os.ReadFile(filepath.Join(r.dir, strconv.Itoa(cpid)))
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	return rec, err
}

// running are the records whose process still runs; the others
// (unreadable, or of a process that ended, or of another process that got
// its pid) are forgotten.
func (r records) running() []jobRecord {
	files, _ := os.ReadDir(r.dir)
	var out []jobRecord
	for _, f := range files {
		cpid, err := strconv.Atoi(f.Name())
		if err != nil {
			continue
		}
		rec, err := r.read(cpid)
		if err != nil || rec.CPID != cpid {
			r.forget(cpid)
			continue
		}
		if start, ok := procStart(rec.Pid); !ok || start != rec.Start {
			r.forget(cpid)
			continue
		}
		out = append(out, rec)
	}
	return out
}

// procStart is a process's start time in clock ticks after boot.
func procStart(pid int) (uint64, bool) {
	st, ok := migrate.ReadStat(pid)
	return st.Start, ok
}
