package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"ssi/cluster/api"
)

func newNodesCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "nodes",
		Short:   "List every node: NAME, ADDR, STATE, ROLE, LOAD, CPUS, MEM, PROCS",
		Long:    "List every node of the cluster, answered by the local agent on any node.\nLOAD is CPUs' worth of time used per second, measured every second.",
		Example: "  ssi nodes\n  ssi nodes --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			nodes, err := api.NewClient(cfg.Socket).Nodes(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSONOut(cmd.OutOrStdout(), nodes)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tADDR\tSTATE\tROLE\tLOAD\tCPUS\tMEM\tPROCS")
			for _, n := range nodes {
				// No sample from that node yet: say so rather than print zeros.
				load, free := "-", "-"
				if n.LastSeen != nil {
					load, free = fmt.Sprintf("%.2f", n.Load), humanBytes(n.MemFree)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%g\t%s/%s\t%d\n", n.Name, n.Addr, n.State, n.Role,
					load, n.CPUs, free, humanBytes(n.MemTotal), n.Procs)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "machine-readable output")
	return cmd
}

func writeJSONOut(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// humanBytes renders a size as openMosix's tools did: short, in binary
// units.
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%c", float64(n)/float64(div), "KMGTPE"[exp])
}
