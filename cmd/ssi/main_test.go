package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestHumanBytes(t *testing.T) {
	cases := map[uint64]string{0: "0B", 1023: "1023B", 1024: "1.0K", 1536: "1.5K", 25276026880: "23.5G"}
	for n, want := range cases {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// run executes the CLI in-process and returns its error and output.
func run(args ...string) (string, error) {
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestBadInvocationsFailClearly(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"lab", "exec", "node1", "true"}, "usage: ssi lab exec NODE -- CMD"},
		{[]string{"debug", "dump", "--pid", "1"}, "give --dir DIR or --to -"},
		{[]string{"debug", "admin", "block", "yes"}, "want 0 or 1"},
		{[]string{"nodes", "--node-port", "70000"}, "node.port"},
		{[]string{"nodes", "--no-such-flag"}, "unknown flag"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			_, err := run(c.args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestEveryCommandHasHelp(t *testing.T) {
	for _, c := range newRootCmd().Commands() {
		if c.Short == "" {
			t.Errorf("ssi %s has no short help", c.Name())
		}
		for _, sub := range c.Commands() {
			if sub.Short == "" {
				t.Errorf("ssi %s %s has no short help", c.Name(), sub.Name())
			}
		}
	}
}
