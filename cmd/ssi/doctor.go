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

	"ssi/cluster/lab"
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
}

func newDoctorCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check that this machine can run ssi",
		Long: `Check this machine: CRIU found and its "check" good, FUSE usable, cgroups,
namespaces, the cluster port. One line per check; exits non-zero if any
fails, saying what to do.`,
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
