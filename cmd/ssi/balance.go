package main

import (
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"ssi/cluster/api"
)

func newBalanceCmd() *cobra.Command {
	var explain, asJSON bool
	cmd := &cobra.Command{
		Use:   "balance --explain",
		Short: "The balancer's recent decisions: what moved where and why, what was considered and left",
		Long: `Every node balances its own processes: it sends a busy one to where it would
run clearly sooner (CPUs weighted by speed, counting the moves under way), and,
short of memory, the one whose departure relieves it most. --explain lists
each node's recent moves, oldest first, then the processes it considered this
round and why they stay. Admin switches: stay, block (/cluster/admin); a
process's lock pins it; balance.enabled turns it off.`,
		Example: "  ssi balance --explain\n  ssi balance --explain --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !explain {
				return errors.New("give --explain (the balancer runs by itself: see balance.enabled)")
			}
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			rs, err := api.NewClient(cfg.Socket).Balance(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSONOut(cmd.OutOrStdout(), rs)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "WHEN\tNODE\tCPID\tACTION\tKIND\tFROM\tTO\tWHY")
			for _, r := range rs {
				why := r.Why
				if r.Err != "" {
					why += ": " + r.Err
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.At.Local().Format("15:04:05"), r.Node, r.CPID,
					r.Action, dash(r.Kind), dash(r.From), dash(r.To), why)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&explain, "explain", false, "list the recent decisions and their reasons")
	cmd.Flags().BoolVar(&asJSON, "json", false, "machine-readable output")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newDrainCmd() *cobra.Command {
	var undo bool
	cmd := &cobra.Command{
		Use:   "drain [--undo] NODE",
		Short: "Block arrivals on this node and move every movable process off it, live (root)",
		Long: `ssi drain NODE, run on NODE, blocks arrivals there (the admin switch block)
and moves each of its processes, still running, to the node where it would
run best; it prints where each went, or why it stayed (a locked process
stays), and fails if any stayed. --undo lifts the block. A node's root
drains only its own node.`,
		Example: "  ssi drain node2\n  ssi drain --undo node2",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			res, err := api.NewClient(cfg.Socket).Drain(cmd.Context(), api.DrainRequest{Node: args[0], Undo: undo})
			if err != nil {
				return err
			}
			if undo {
				fmt.Fprintf(cmd.OutOrStdout(), "%s takes arrivals again\n", args[0])
				return nil
			}
			stayed := 0
			for _, r := range res {
				if r.Err != "" {
					stayed++
					fmt.Fprintf(cmd.OutOrStdout(), "%d stays on %s: %s\n", r.CPID, args[0], r.Err)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d moved to %s\n", r.CPID, r.To)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s drained: %d moved, %d stayed; it takes no arrivals until ssi drain --undo %s\n",
				args[0], len(res)-stayed, stayed, args[0])
			if stayed > 0 {
				return fmt.Errorf("%d process(es) could not leave %s", stayed, args[0])
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&undo, "undo", false, "take arrivals again")
	return cmd
}
