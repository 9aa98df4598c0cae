package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ssi/cluster/membership"
	"ssi/cluster/transport"
	"ssi/configs"
)

func TestTokenCommandLines(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"token", "create", "--ttl", "-1s"}, "must not be negative"},
		{[]string{"token", "create", "--uses", "-1"}, "must not be negative"},
		{[]string{"token", "create", "--ttl", "soon"}, "invalid argument"},
		{[]string{"token", "revoke"}, "accepts 1 arg"},
		{[]string{"token", "revoke", "a", "b"}, "accepts 1 arg"},
		{[]string{"token", "list", "extra"}, "unknown command"},
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

// --out writes the token for the agent's join_token_file: mode 0600,
// nothing on stdout.
func TestTokenCreateOut(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run("token", "create", "--offline", "--out", p)
	if err != nil || out != "" {
		t.Fatalf("create --out: %q, %v", out, err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %04o", st.Mode().Perm())
	}
	if _, err := transport.ReadTokenFile(p); err != nil {
		t.Fatal(err)
	}
}

// The agent takes its token from the file, the environment or the flag;
// the flag is warned about; the environment variable is gone after.
func TestAgentJoinToken(t *testing.T) {
	tok, _ := transport.NewToken()
	agent := func(env string, args ...string) (string, string, error) {
		t.Helper()
		if env != "" {
			t.Setenv("SSI_JOIN_TOKEN", env)
		}
		cmd := newAgentCmd()
		configs.AddFlags(cmd.Flags())
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		cfg, err := loadConfig(cmd)
		if err != nil {
			return "", "", err
		}
		var logs bytes.Buffer
		got, err := agentJoinToken(cmd, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
		return got, logs.String(), err
	}
	if got, logs, err := agent(tok); got != tok || err != nil || logs != "" {
		t.Fatalf("from the environment: %q, %v, logs %q", got, err, logs)
	}
	if _, set := os.LookupEnv("SSI_JOIN_TOKEN"); set {
		t.Fatal("SSI_JOIN_TOKEN left in the environment for the agent's children")
	}
	if got, logs, err := agent("", "--join-token", tok); got != tok || err != nil || !strings.Contains(logs, "every user sees it") {
		t.Fatalf("from the flag: %q, %v, logs %q", got, err, logs)
	}
	p := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := agent("", "--join-token-file", p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a 0644 token file: %v", err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, logs, err := agent("", "--join-token-file", p); got != tok || err != nil || logs != "" {
		t.Fatalf("from a 0600 file: %q, %v, logs %q", got, err, logs)
	}
}

func TestPrintTokens(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.Local)
	var out bytes.Buffer
	err := printTokens(&out, []membership.TokenInfo{
		{ID: "aaa", CreatedAt: at, ExpiresAt: at.Add(time.Hour), Uses: 1, Used: 1, Status: "used up"},
		{ID: "bbb", CreatedAt: at, Used: 3, Status: "valid"},
	})
	want := "ID   CREATED              EXPIRES              USES   STATUS\n" +
		"aaa  2030-01-02 03:04:05  2030-01-02 04:04:05  1/1    used up\n" +
		"bbb  2030-01-02 03:04:05  never                3/any  valid\n"
	if err != nil || out.String() != want {
		t.Fatalf("got %v\n%s\nwant\n%s", err, out.String(), want)
	}
}
