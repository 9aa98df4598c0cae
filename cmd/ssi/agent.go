package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"ssi/cluster"
	"ssi/cluster/balance"
	"ssi/cluster/membership"
	"ssi/cluster/migration"
	"ssi/configs"
	"ssi/migrate"
)

func newAgentCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "agent",
		Short: "Run the node daemon",
		Long: `Run the node daemon: it joins or forms the cluster, mounts /cluster and
serves migrations. It stops cleanly on SIGTERM or SIGINT.`,
		Example: `  ssi agent
  ssi agent --config /etc/ssi/ssi.yaml
  SSI_NODE_NAME=n1 ssi agent --node-port 7700
  ssi agent --join-token-file /etc/ssi/join-token   # join the cluster of that token (file mode 0600)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			log := newLogger(cfg)
			token, err := agentJoinToken(cmd, cfg, log)
			if err != nil {
				return err
			}
			a, err := cluster.NewAgent(cluster.Config{
				NodeName:       cfg.Node.Name,
				BindAddr:       cfg.Node.BindAddr,
				AdvertiseAddr:  cfg.Node.AdvertiseAddr,
				Port:           cfg.Node.Port,
				DataDir:        cfg.DataDir,
				Socket:         cfg.Socket,
				Membership:     membershipConfig(cfg, token),
				ReadWait:       cfg.Cluster.ReadWait,
				HomePath:       homePath(cfg),
				Mountpoint:     cfg.FS.Mountpoint,
				AttrTimeout:    cfg.FS.AttrTimeout,
				EntryTimeout:   cfg.FS.EntryTimeout,
				HideOtherUsers: cfg.FS.HideOtherUsers,
				CRIU:           migrate.Config{Path: cfg.CRIU.Path, NoBreakpoints: cfg.CRIU.NoBreakpoints},
				CRIUWorkDir:    cfg.CRIU.WorkDir,
				// The tests' failure points, read once here: the
				// migration's path never reads the environment.
				MoveHooks:      migration.HooksFromEnv(),
				PauseStart:     os.Getenv("SSI_PAUSE_START"),
				JobsMaxPerUser: cfg.Jobs.MaxPerUser,
				Balance: balance.Config{Margin: cfg.Balance.Margin, CostFactor: cfg.Balance.CostFactor,
					Cooldown: cfg.Balance.Cooldown, MemLow: cfg.Balance.MemLow},
				BalanceOff: !cfg.Balance.Enabled,
			}, log)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return a.Run(ctx)
		},
	}
}

// membershipConfig is the membership's part of cfg; token is the join
// token as agentJoinToken found it.
func membershipConfig(cfg *configs.Config, token string) membership.Config {
	return membership.Config{
		JoinToken:         token,
		TokenTTL:          cfg.Cluster.TokenTTL,
		CertLifetime:      cfg.Cluster.CertLifetime,
		Join:              cfg.Join,
		Discovery:         cfg.Discovery.Enabled,
		DiscoveryGroup:    cfg.Discovery.Group,
		DiscoveryInterval: cfg.Discovery.Interval,
		DiscoveryWait:     cfg.Discovery.Wait,
		Voters:            cfg.Cluster.Voters,
		RemoveAfter:       cfg.Cluster.RemoveAfter,
		TelemetryInterval: cfg.Cluster.TelemetryInterval,
		HomeMaxFileSize:   cfg.Home.MaxFileSize,
		HomeQuota:         cfg.Home.Quota,
		Speed:             cfg.Node.Speed,
	}
}

// homePath is the shared directory to serve as /cluster/home, if the
// configuration asks for the path backend.
func homePath(cfg *configs.Config) string {
	if cfg.Home.Backend == "path" {
		return cfg.Home.Path
	}
	return ""
}
