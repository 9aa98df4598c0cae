package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"ssi/cluster/api"
	"ssi/cluster/lab"
	"ssi/cluster/membership"
	"ssi/configs"
	"ssi/fs"
	"ssi/migrate"
)

// check is one line of `ssi doctor`.
type check struct {
	name string
	run  func(ctx context.Context, cfg *configs.Config) (string, error)
}

var doctorChecks = []check{
	{"root", checkRoot},
	{"criu", checkCRIU},
	{"fuse", func(ctx context.Context, _ *configs.Config) (string, error) {
		return "mounted, read and unmounted a test file system", fs.Probe(ctx)
	}},
	{"cgroups", func(context.Context, *configs.Config) (string, error) { return lab.ProbeCgroups() }},
	{"namespaces", func(context.Context, *configs.Config) (string, error) {
		return "network, mount and pid namespaces can be created", lab.ProbeNamespaces()
	}},
	{"port", checkPort},
	{"users", checkUsers},
}

// warning is a finding that does not stop ssi from running here, but
// that the operator should hear of: a "warn" line, not a failure.
type warning struct{ msg string }

func (w warning) Error() string { return w.msg }

func newDoctorCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check that this machine can run ssi",
		Long: `Check this machine: CRIU found and its "check" good, FUSE usable, cgroups,
namespaces, the cluster port, and, while an agent runs here, that this
node's user database (name:uid pairs) is the cluster's. One line per
check; exits non-zero if any fails, saying what to do; a warning does
not fail.`,
		Example: "  ssi doctor\n  ssi doctor --criu-path /usr/local/sbin/criu",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			failed := 0
			for _, c := range doctorChecks {
				ctx, cancel := context.WithTimeout(cmd.Context(), 60*time.Second)
				msg, err := c.run(ctx, cfg)
				cancel()
				var warn warning
				if errors.As(err, &warn) {
					fmt.Fprintf(cmd.OutOrStdout(), "warn %-10s %v\n", c.name, warn)
					continue
				}
				if err != nil {
					failed++
					fmt.Fprintf(cmd.OutOrStdout(), "FAIL %-10s %v\n", c.name, err)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "ok   %-10s %s\n", c.name, msg)
			}
			if failed > 0 {
				return fmt.Errorf("doctor: %d check(s) failed", failed)
			}
			return nil
		},
	}
}

func checkRoot(context.Context, *configs.Config) (string, error) {
	if os.Geteuid() != 0 {
		return "", errors.New("not root: the agent needs root for CRIU, FUSE, cgroups and namespaces (use sudo)")
	}
	return "running as root", nil
}

func checkCRIU(ctx context.Context, cfg *configs.Config) (string, error) {
	c := migrate.New(migrate.Config{Path: cfg.CRIU.Path, NoBreakpoints: cfg.CRIU.NoBreakpoints}, nil)
	v, err := c.Gate(ctx)
	if err != nil {
		return "", fmt.Errorf("%w (run make setup, or set criu.path)", err)
	}
	if err := c.Check(ctx); err != nil {
		return "", fmt.Errorf("%s at %s: %w", migrate.FormatVersion(v), cfg.CRIU.Path, err)
	}
	fault := ""
	if cfg.CRIU.NoBreakpoints {
		fault = ", CRIU_FAULT=130"
	}
	return fmt.Sprintf("%s at %s, check: looks good%s", migrate.FormatVersion(v), cfg.CRIU.Path, fault), nil
}

func checkPort(_ context.Context, cfg *configs.Config) (string, error) {
	addr := net.JoinHostPort(cfg.Node.BindAddr, strconv.Itoa(cfg.Node.Port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("cluster port %s: %w (is an agent already running? set node.port)", addr, err)
	}
	l.Close()
	return "cluster port " + addr + " is free", nil
}

// checkUsers compares this node's user database with the one most other
// nodes registered: members vouch for their users by uid, so a uid must
// name the same user on every node. It needs a running agent to learn
// the others'.
func checkUsers(ctx context.Context, cfg *configs.Config) (string, error) {
	mine, err := membership.UsersDigest(membership.PasswdFile)
	if err != nil {
		return "", warning{fmt.Sprintf("cannot read the user database: %v", err)}
	}
	c := api.NewClient(cfg.Socket)
	st, err := c.Status(ctx)
	if err != nil {
		return "no agent answers here: no cluster to compare the user database with", nil
	}
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return "", warning{fmt.Sprintf("cannot list the nodes: %v", err)}
	}
	var others []string
	for _, n := range nodes {
		if n.Name != st.Node {
			others = append(others, n.UsersDigest)
		}
	}
	want := membership.MajorityDigest(others)
	switch {
	case want == "":
		return "no other node registered a user database to compare with", nil
	case want != mine:
		return "", warning{fmt.Sprintf("this node's user database (%s in %s) differs from the cluster's (%s): "+
			"the same uid must be the same user on every node", shortDigest(mine), membership.PasswdFile, shortDigest(want))}
	}
	return "this node's users (" + shortDigest(mine) + ") are the cluster's", nil
}

// shortDigest is a digest as people compare it.
func shortDigest(digest string) string { return digest[:min(12, len(digest))] }
