package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"ssi/cluster/api"
	"ssi/cluster/transport"
)

func newTokenCmd() *cobra.Command {
	tok := &cobra.Command{
		Use:   "token",
		Short: "Join tokens: the secret that lets a new machine join",
	}
	var offline bool
	create := &cobra.Command{
		Use:   "create",
		Short: "Print a new join token, valid on every member",
		Long: `Print a new join token. On a member it is recorded in the cluster's state,
so every member accepts it. With --offline it is only generated: give the
same token to the agents of a cluster that does not exist yet, and the
first of them forms the cluster with it.`,
		Example: "  ssi token create\n  ssi agent --join-token $(ssi token create --offline)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var t string
			var err error
			if offline {
				t, err = transport.NewToken()
			} else {
				cfg, lerr := loadConfig(cmd)
				if lerr != nil {
					return lerr
				}
				t, err = api.NewClient(cfg.Socket).CreateToken(cmd.Context())
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), t)
			return nil
		},
	}
	create.Flags().BoolVar(&offline, "offline", false, "generate a token without asking the cluster")
	tok.AddCommand(create)
	return tok
}
