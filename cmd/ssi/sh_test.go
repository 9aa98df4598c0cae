package main

import (
	"slices"
	"testing"
)

// TestShArgv: every argument goes to /bin/sh as it is, make's flags
// included; no arguments is refused rather than an interactive shell.
func TestShArgv(t *testing.T) {
	for _, c := range []struct {
		args, want []string
	}{
		{[]string{"-c", "echo $PWD; exit 3"}, []string{"/bin/sh", "-c", "echo $PWD; exit 3"}},
		{[]string{"-ec", "cc -c a.c"}, []string{"/bin/sh", "-ec", "cc -c a.c"}},
		{[]string{"-e", "-c", "true", "name", "arg"}, []string{"/bin/sh", "-e", "-c", "true", "name", "arg"}},
		{[]string{"--", "-c", "x"}, []string{"/bin/sh", "--", "-c", "x"}},
	} {
		got, err := shArgv(c.args)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("shArgv(%q) = %q, %v; want %q", c.args, got, err, c.want)
		}
	}
	if got, err := shArgv(nil); err == nil {
		t.Errorf("shArgv() = %q, want an error", got)
	}
}
