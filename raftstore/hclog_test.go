package raftstore

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHclogAdapter(t *testing.T) {
	var buf bytes.Buffer
	h := newHclog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), "raft")
	l := h.Named("snapshot").With("peer", "n2")
	args := []any{"servers", hclog.Fmt("%d servers", 3)}
	l.Info("hello", args...)
	l.Debug("hidden")
	l.Error("bad", "error", "boom")

	out := buf.String()
	for _, want := range []string{
		`level=INFO msg=hello peer=n2 component=raft.snapshot servers="3 servers"`,
		`level=ERROR msg=bad peer=n2 component=raft.snapshot error=boom`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hidden") {
		t.Errorf("debug line logged at info level:\n%s", out)
	}
	if _, ok := args[1].(hclog.Format); !ok {
		t.Error("adapter rewrote the caller's arguments")
	}
	if l.IsDebug() || !l.IsInfo() || l.GetLevel() != hclog.Info || l.Name() != "raft.snapshot" {
		t.Errorf("levels/name: debug %v info %v level %v name %q", l.IsDebug(), l.IsInfo(), l.GetLevel(), l.Name())
	}
}
