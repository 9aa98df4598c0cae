package configs

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// TestYAMLDocumentsEveryKey keeps configs/ssi.yaml and Keys from drifting:
// the file must set exactly the known keys, each to its default.
func TestYAMLDocumentsEveryKey(t *testing.T) {
	v := viper.New()
	v.SetConfigFile("ssi.yaml")
	if err := v.ReadInConfig(); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, k := range Keys {
		want = append(want, k.Name)
		if !v.IsSet(k.Name) {
			t.Errorf("ssi.yaml does not document %s", k.Name)
			continue
		}
		got := fmt.Sprint(v.Get(k.Name))
		if d, ok := k.Default.(time.Duration); ok {
			got = fmt.Sprint(v.GetDuration(k.Name))
			_ = d
		}
		if def := fmt.Sprint(k.Default); got != def {
			t.Errorf("ssi.yaml: %s = %q, default is %q", k.Name, got, def)
		}
	}
	got := v.AllKeys()
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("ssi.yaml keys %v, want %v", got, want)
	}
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	body := "criu:\n  path: /from/file\nnode:\n  port: 1111\n  name: filenode\nlog_level: warn\n"
	if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSI_CONFIG", file)
	t.Setenv("SSI_NODE_PORT", "2222")
	t.Setenv("SSI_LOG_LEVEL", "debug")
	t.Setenv("SSI_JOIN", "10.0.0.1:7700,10.0.0.2:7700")
	t.Setenv("SSI_DISCOVERY_WAIT", "500ms")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	AddFlags(fs)
	if err := fs.Parse([]string{"--node-port", "3333"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(fs)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"default", c.FS.Mountpoint, "/cluster"},
		{"file over default", c.CRIU.Path, "/from/file"},
		{"file", c.Node.Name, "filenode"},
		{"env over file", c.LogLevel, "debug"},
		{"flag over env", c.Node.Port, 3333},
		{"bool default", c.CRIU.NoBreakpoints, true},
		{"list from env", c.Join, []string{"10.0.0.1:7700", "10.0.0.2:7700"}},
		{"duration from env", c.Discovery.Wait, 500 * time.Millisecond},
		{"duration default", c.Cluster.RemoveAfter, 10 * time.Minute},
		// One truth on every node: the kernel keeps nothing by default.
		{"attr_timeout default", c.FS.AttrTimeout, time.Duration(0)},
		{"entry_timeout default", c.FS.EntryTimeout, time.Duration(0)},
	}
	for _, ck := range checks {
		if fmt.Sprint(ck.got) != fmt.Sprint(ck.want) {
			t.Errorf("%s: got %v, want %v", ck.name, ck.got, ck.want)
		}
	}
}

func TestBadValuesAreRefused(t *testing.T) {
	cases := []struct {
		env, val, want string
	}{
		{"SSI_NODE_PORT", "70000", "node.port"},
		{"SSI_NODE_BIND_ADDR", "not-an-ip", "node.bind_addr"},
		{"SSI_LOG_LEVEL", "loud", "log_level"},
		{"SSI_LAB_NAME", "Much-Too-Long", "lab name"},
		{"SSI_LAB_SUBNET", "10.0.0.0/30", "lab.subnet"},
		{"SSI_LAB_CPU_QUOTA", "-1", "lab.cpu_quota"},
		{"SSI_LAB_MEM_LIMIT", "lots", "lab.mem_limit"},
		{"SSI_JOIN_TOKEN", "short", "join_token"},
		{"SSI_CLUSTER_VOTERS", "0", "cluster.voters"},
	}
	for _, tc := range cases {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv(tc.env, tc.val)
			_, err := Load(nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

func TestUnknownFileKeyIsRefused(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("criu:\n  pth: /typo\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSI_CONFIG", file)
	_, err := Load(nil)
	if err == nil || !strings.Contains(err.Error(), "criu.pth") {
		t.Fatalf("got %v, want an error naming criu.pth", err)
	}
}
