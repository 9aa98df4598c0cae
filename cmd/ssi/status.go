package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"ssi/cluster/api"
)

func newStatusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "status",
		Short:   "Cluster health in a few lines: leader, nodes up/total, quorum, processes",
		Example: "  ssi status\n  ssi status --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			st, err := api.NewClient(cfg.Socket).Status(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSONOut(cmd.OutOrStdout(), st)
			}
			quorum := "yes"
			if !st.Quorum {
				quorum = "NO (writes fail with EROFS; reads come from this node's replica)"
			}
			leader := st.Leader
			if leader == "" {
				leader = "none"
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "cluster:   %s (answered by %s)\n", st.ClusterID, st.Node)
			fmt.Fprintf(out, "leader:    %s\n", leader)
			fmt.Fprintf(out, "nodes:     %d up of %d (%d voters)\n", st.NodesUp, st.NodesTotal, st.Voters)
			fmt.Fprintf(out, "quorum:    %s\n", quorum)
			fmt.Fprintf(out, "processes: %d\n", st.Procs)
			if st.StaleReads {
				fmt.Fprintf(out, "reads:     STALE: no quorum answers, %s serves its replica as it is\n", st.Node)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "machine-readable output")
	return cmd
}
