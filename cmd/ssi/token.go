package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"ssi/cluster/api"
	"ssi/cluster/membership"
	"ssi/cluster/transport"
	"ssi/configs"
)

func newTokenCmd() *cobra.Command {
	tok := &cobra.Command{
		Use:   "token",
		Short: "Join tokens: the secret that lets a new machine join",
		Long: `Join tokens: the secret that lets a new machine join. A token lives
cluster.token_ttl (24h by default) or its own --ttl, admits any number of
joins or its own --uses, and can be revoked. Give it to a new agent in a
file of mode 0600 (join_token_file) or in SSI_JOIN_TOKEN, never on a
command line, where every user sees it in ps.`,
	}
	tok.AddCommand(newTokenCreateCmd(), newTokenListCmd(), newTokenRevokeCmd())
	return tok
}

func newTokenCreateCmd() *cobra.Command {
	var offline bool
	var ttl time.Duration
	var uses int
	var out string
	create := &cobra.Command{
		Use:   "create",
		Short: "Print a new join token, valid on every member (root only)",
		Long: `Print a new join token. On a member it is recorded in the cluster's state,
so every member accepts it, until it expires (--ttl, default
cluster.token_ttl), is used --uses times, or is revoked. With --offline it
is only generated: give the same token to the agents of a cluster that does
not exist yet, and the first of them forms the cluster with it.`,
		Example: `  ssi token create --out /etc/ssi/join-token      # written with mode 0600
  ssi token create --ttl 1h --uses 1 --out /root/node7.token
  ssi token create --offline --out /etc/ssi/join-token
  ssi agent --join-token-file /etc/ssi/join-token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl < 0 || uses < 0 {
				return errors.New("token create: --ttl and --uses must not be negative")
			}
			var t string
			var err error
			if offline {
				t, err = transport.NewToken()
			} else {
				cfg, lerr := loadConfig(cmd)
				if lerr != nil {
					return lerr
				}
				var res membership.TokenCreated
				err = tokenCall(cmd.Context(), cfg.Socket, http.MethodPost, "/v1/tokens",
					membership.TokenCreate{TTL: ttl, Uses: uses}, &res)
				t = res.Token
				if err == nil {
					// The id (for list and revoke) goes to stderr: stdout
					// is the token alone, for a file or a variable.
					fmt.Fprintf(cmd.ErrOrStderr(), "token id %s, expires %s\n", res.ID, res.ExpiresAt.Local().Format(time.DateTime))
				}
			}
			if err != nil {
				return err
			}
			if out != "" {
				return transport.WriteSecretFile(out, []byte(t+"\n"))
			}
			fmt.Fprintln(cmd.OutOrStdout(), t)
			return nil
		},
	}
	create.Flags().BoolVar(&offline, "offline", false, "generate a token without asking the cluster")
	create.Flags().DurationVar(&ttl, "ttl", 0, "how long the token admits joins (default cluster.token_ttl)")
	create.Flags().IntVar(&uses, "uses", 0, "how many joins it admits (default: any number)")
	create.Flags().StringVar(&out, "out", "", "write the token to this file (mode 0600) instead of printing it")
	return create
}

func newTokenListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List the join tokens: id, life, uses and status, never the secret (root only)",
		Example: "  ssi token list\n  ssi token list --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			var list []membership.TokenInfo
			if err := tokenCall(cmd.Context(), cfg.Socket, http.MethodGet, "/v1/tokens", nil, &list); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			}
			return printTokens(cmd.OutOrStdout(), list)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "machine-readable output")
	return cmd
}

// printTokens writes the token table.
func printTokens(out io.Writer, list []membership.TokenInfo) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tCREATED\tEXPIRES\tUSES\tSTATUS")
	for _, t := range list {
		expires, uses := "never", strconv.Itoa(t.Used)+"/any"
		if !t.ExpiresAt.IsZero() {
			expires = t.ExpiresAt.Local().Format(time.DateTime)
		}
		if t.Uses > 0 {
			uses = fmt.Sprintf("%d/%d", t.Used, t.Uses)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.CreatedAt.Local().Format(time.DateTime), expires, uses, t.Status)
	}
	return w.Flush()
}

func newTokenRevokeCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "revoke ID",
		Short:   "Revoke a join token: joins with it fail from now on (root only)",
		Example: "  ssi token list\n  ssi token revoke 3f2a9c01b7d4",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			return tokenCall(cmd.Context(), cfg.Socket, http.MethodPost, "/v1/tokens/revoke",
				membership.TokenRevokeRequest{ID: args[0]}, nil)
		},
	}
}

// tokenCall sends one request about tokens to the local agent and
// decodes its answer into out (if not nil).
func tokenCall(ctx context.Context, socket, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, body)
	if err != nil {
		return err
	}
	hc := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
	resp, err := hc.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" {
			return fmt.Errorf("%w: %v", api.ErrNoAgent, ne.Err)
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return api.ReadError(resp)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// agentJoinToken is the token the agent joins with: from join_token_file
// (which must be safe: see transport.ReadTokenFile), else from
// join_token (SSI_JOIN_TOKEN, the file, or --join-token, which every
// user sees in ps: said in a warning). The token leaves the process's
// environment, so that nothing the agent starts inherits it.
func agentJoinToken(cmd *cobra.Command, cfg *configs.Config, log *slog.Logger) (string, error) {
	env := configs.EnvName("join_token")
	defer os.Unsetenv(env)
	if cfg.JoinTokenFile != "" {
		return transport.ReadTokenFile(cfg.JoinTokenFile)
	}
	if cfg.JoinToken == "" {
		return "", nil
	}
	if f := cmd.Flags().Lookup(configs.FlagName("join_token")); f != nil && f.Changed {
		log.Warn("the join token is on the command line, where every user sees it (ps): " +
			"give it in join_token_file (mode 0600) or SSI_JOIN_TOKEN instead")
		return cfg.JoinToken, nil
	}
	if _, inEnv := os.LookupEnv(env); !inEnv {
		// From the configuration file: it must not be readable by others.
		if file := configFile(cmd); file != "" {
			if st, err := os.Stat(file); err == nil && st.Mode().Perm()&0o077 != 0 {
				log.Warn("the configuration file holds the join token and others may read it: "+
					"chmod 600 it, or use join_token_file", "file", file, "mode", fmt.Sprintf("%04o", st.Mode().Perm()))
			}
		}
	}
	return cfg.JoinToken, nil
}

// configFile is the configuration file cmd reads, or "".
func configFile(cmd *cobra.Command) string {
	if f := cmd.Flags().Lookup("config"); f != nil && f.Changed {
		return f.Value.String()
	}
	return os.Getenv("SSI_CONFIG")
}
