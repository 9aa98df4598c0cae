package migrate

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

// A busy process is runnable all the time, an idle one hardly ever.
func TestRunnable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	busy := exec.CommandContext(ctx, "sh", "-c", "while :; do :; done")
	idle := exec.CommandContext(ctx, "sleep", "30")
	for _, c := range []*exec.Cmd{busy, idle} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Process.Kill(); _ = c.Wait() }()
	}
	b0, i0, t0 := Runnable(busy.Process.Pid), Runnable(idle.Process.Pid), time.Now()
	// Wait for the busy one to have been runnable for 300 ms.
	for Runnable(busy.Process.Pid)-b0 < 300*time.Millisecond {
		if ctx.Err() != nil {
			t.Fatal("the busy loop was never runnable for 300 ms")
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(t0)
	if got := Runnable(idle.Process.Pid) - i0; got > elapsed/10 {
		t.Errorf("sleep was runnable %s of %s", got, elapsed)
	}
	if got := Runnable(busy.Process.Pid) - b0; got < elapsed*9/10 {
		t.Errorf("the busy loop was runnable %s of %s", got, elapsed)
	}
	if Runnable(1<<30) != 0 {
		t.Error("a process that does not exist was runnable")
	}
}
