// Package configs turns defaults, an optional YAML file, SSI_* environment
// variables and command-line flags (in that order of precedence) into one
// validated, typed Config. It is the only package that imports viper: every
// other package receives its own typed section.
package configs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// Config is the whole configuration of an ssi binary.
type Config struct {
	Node      NodeConfig `mapstructure:"node"`
	JoinToken string     `mapstructure:"join_token"`
	// JoinTokenFile holds the token instead of JoinToken: a file (mode
	// 0600) keeps it off command lines and out of other users' sight.
	JoinTokenFile string          `mapstructure:"join_token_file"`
	Join          []string        `mapstructure:"join"`
	Discovery     DiscoveryConfig `mapstructure:"discovery"`
	Cluster       ClusterConfig   `mapstructure:"cluster"`
	DataDir       string          `mapstructure:"data_dir"`
	Socket        string          `mapstructure:"socket"`
	LogLevel      string          `mapstructure:"log_level"`
	CRIU          CRIUConfig      `mapstructure:"criu"`
	FS            FSConfig        `mapstructure:"fs"`
	Lab           LabConfig       `mapstructure:"lab"`
	Home          HomeConfig      `mapstructure:"home"`
	Jobs          JobsConfig      `mapstructure:"jobs"`
	Balance       BalanceConfig   `mapstructure:"balance"`
}

// BalanceConfig is the balancer's policy (cluster/balance).
type BalanceConfig struct {
	Enabled    bool          `mapstructure:"enabled"`
	Margin     float64       `mapstructure:"margin"`
	CostFactor float64       `mapstructure:"cost_factor"`
	Cooldown   time.Duration `mapstructure:"cooldown"`
	MemLow     float64       `mapstructure:"mem_low"`
}

// JobsConfig bounds what one user may ask of the cluster.
type JobsConfig struct {
	MaxPerUser int `mapstructure:"max_per_user"`
}

// NodeConfig says who this node is on the network.
type NodeConfig struct {
	Name          string `mapstructure:"name"`
	BindAddr      string `mapstructure:"bind_addr"`
	AdvertiseAddr string `mapstructure:"advertise_addr"`
	Port          int    `mapstructure:"port"`
	// Speed is one of the node's CPUs against the reference CPU
	// (telemetry.SpeedUnit = 10000); 0: measured at start.
	Speed int `mapstructure:"speed"`
}

// HomeConfig sets the shared home's limits; the cluster's first node
// records them in the agreed state, so every node enforces the same.
type HomeConfig struct {
	Backend     string `mapstructure:"backend"`
	Path        string `mapstructure:"path"`
	MaxFileSize uint64 `mapstructure:"max_file_size"`
	Quota       uint64 `mapstructure:"quota"`
}

// DiscoveryConfig configures the LAN beacon by which agents find each
// other.
type DiscoveryConfig struct {
	Enabled  bool          `mapstructure:"enabled"`
	Group    string        `mapstructure:"group"`
	Interval time.Duration `mapstructure:"interval"`
	Wait     time.Duration `mapstructure:"wait"`
}

// ClusterConfig tunes membership and telemetry.
type ClusterConfig struct {
	Voters            int           `mapstructure:"voters"`
	RemoveAfter       time.Duration `mapstructure:"remove_after"`
	TelemetryInterval time.Duration `mapstructure:"telemetry_interval"`
	ReadWait          time.Duration `mapstructure:"read_wait"`
	CertLifetime      time.Duration `mapstructure:"cert_lifetime"`
	TokenTTL          time.Duration `mapstructure:"token_ttl"`
}

// CRIUConfig locates CRIU and says how it must be run on this machine.
type CRIUConfig struct {
	Path          string `mapstructure:"path"`
	NoBreakpoints bool   `mapstructure:"no_breakpoints"`
	WorkDir       string `mapstructure:"work_dir"`
}

// FSConfig configures the /cluster mount. The timeouts apply to proc,
// nodes and admin only: the home and failed lookups are never cached.
type FSConfig struct {
	Mountpoint   string        `mapstructure:"mountpoint"`
	AttrTimeout  time.Duration `mapstructure:"attr_timeout"`
	EntryTimeout time.Duration `mapstructure:"entry_timeout"`
	// HideOtherUsers hides other users' processes, like /proc's hidepid=2.
	HideOtherUsers bool `mapstructure:"hide_other_users"`
}

// LabConfig configures `ssi lab`, the simulated cluster on one machine.
type LabConfig struct {
	Name   string `mapstructure:"name"`
	Dir    string `mapstructure:"dir"`
	Subnet string `mapstructure:"subnet"`
	// CPUQuota and MemLimit are lists, one value for all nodes or one
	// per node (ParseCPUQuotas, ParseMemLimits).
	CPUQuota string `mapstructure:"cpu_quota"`
	MemLimit string `mapstructure:"mem_limit"`
}

// Key is one configuration key: its dotted name, default and help text.
// Keys is the single list from which defaults, flags and the documented
// configs/ssi.yaml are checked against each other.
type Key struct {
	Name    string
	Default any
	Help    string
}

// Keys lists every configuration key.
var Keys = []Key{
	{"node.name", "", "node name in the cluster; empty means the host name"},
	{"node.bind_addr", "0.0.0.0", "address the cluster port listens on"},
	{"node.advertise_addr", "", "address other nodes use to reach this one; empty means the first non-loopback address"},
	{"node.port", 7700, "the cluster port (node-to-node traffic)"},
	{"node.speed", 0, "one CPU's speed against the reference CPU's 10000 (openMosix's units); 0: measured at start"},
	{"join_token", "", "secret that lets this agent join (ssi token create); empty: join nobody, form a cluster"},
	{"join_token_file", "", "file (mode 0600) holding the join token; keeps the secret off command lines"},
	{"join", []string{}, "addresses (host:port) of members to join, besides those found by discovery"},
	{"discovery.enabled", true, "find other agents by UDP multicast beacons on the LAN"},
	{"discovery.group", "239.255.77.77:7701", "multicast group and port of the beacons"},
	{"discovery.interval", time.Second, "time between beacons"},
	{"discovery.wait", 3 * time.Second, "how long a new agent looks for a cluster before forming one"},
	{"cluster.voters", 3, "Raft voters to keep; further nodes join as non-voters"},
	{"cluster.remove_after", 10 * time.Minute, "the leader removes a node not heard from for this long"},
	{"cluster.telemetry_interval", time.Second, "how often nodes exchange their load"},
	{"cluster.read_wait", 2 * time.Second, "how long a read waits for the quorum before it serves this node's replica as it is"},
	{"cluster.cert_lifetime", 30 * 24 * time.Hour, "lifetime of node certificates; each renews itself at two thirds of it"},
	{"cluster.token_ttl", 24 * time.Hour, "how long a join token is valid unless ssi token create --ttl says otherwise"},
	{"jobs.max_per_user", 1024, "cluster processes one uid may have at once (EAGAIN beyond); 0: no limit"},
	{"balance.enabled", true, "move processes by themselves to where they run soonest, and away from a node short of memory"},
	{"balance.margin", 0.1, "how much sooner (a fraction) a process must run elsewhere to be moved there; an even load never moves"},
	{"balance.cost_factor", 2.0, "a process moves for load once it used this many times its move's cost in CPU"},
	{"balance.cooldown", 20 * time.Second, "a process that moved less than this ago does not move again for load"},
	{"balance.mem_low", 0.1, "free memory fraction under which a node sends a process away"},
	{"data_dir", "/var/lib/ssi", "the agent's state directory"},
	{"socket", "/run/ssi/agent.sock", "unix socket on which the agent serves local commands"},
	{"log_level", "info", "debug, info, warn or error"},
	{"criu.path", "/opt/ssi/criu/bin/criu", "CRIU binary (>= 4.2); make setup installs a wrapper here"},
	{"criu.no_breakpoints", true, "run CRIU with CRIU_FAULT=130: needed where hardware breakpoints do not fire (VMs)"},
	{"criu.work_dir", "/var/lib/ssi/criu", "where checkpoint images and CRIU logs are kept"},
	{"fs.mountpoint", "/cluster", "where the cluster file system is mounted; empty: no mount"},
	{"fs.attr_timeout", time.Duration(0), "how long the kernel may cache attributes in /cluster/proc, nodes and admin; 0: never (one truth on every node)"},
	{"fs.entry_timeout", time.Duration(0), "how long the kernel may cache names in /cluster/proc, nodes and admin; 0: never (one truth on every node)"},
	{"fs.hide_other_users", false, "hide other users' processes in /cluster/proc and ssi ps (like hidepid=2); root sees all"},
	{"home.backend", "raft", "raft: /cluster/home replicated by the cluster; path: serve home.path (an existing shared mount)"},
	{"home.path", "", "with home.backend path: the shared directory (NFS, CephFS, ...) to serve as /cluster/home"},
	{"home.max_file_size", 4 << 30, "largest file in /cluster/home, bytes (EFBIG beyond); 0: no limit"},
	{"home.quota", 16 << 30, "total bytes in /cluster/home (ENOSPC beyond); 0: no limit. Every node keeps a full replica in memory"},
	{"lab.name", "ssi", "name of the lab (up to 8 characters): several labs can coexist"},
	{"lab.dir", "/var/lib/ssi-lab", "where labs keep their nodes' state"},
	{"lab.subnet", "10.213.0.0/24", "private subnet of the lab's bridge; node K gets host address K+10"},
	{"lab.cpu_quota", "0", "CPUs per lab node (cgroup CPU quota): one value for all nodes or one per node (1,0.5,0.5); 0 means no limit"},
	{"lab.mem_limit", "0", "memory per lab node (cgroup memory limit, e.g. 512M): one value for all nodes or one per node (512M,2G); 0 means no limit"},
}

// FlagName is the command-line flag for a key: "criu.no_breakpoints" is
// --criu-no-breakpoints.
func FlagName(key string) string {
	return strings.NewReplacer(".", "-", "_", "-").Replace(key)
}

// EnvName is the environment variable for a key: SSI_CRIU_NO_BREAKPOINTS.
func EnvName(key string) string {
	return "SSI_" + strings.ToUpper(strings.NewReplacer(".", "_").Replace(key))
}

// AddFlags registers one flag per key, plus --config, on fs.
func AddFlags(fs *pflag.FlagSet) {
	fs.String("config", "", "configuration file (YAML); also SSI_CONFIG")
	for _, k := range Keys {
		name := FlagName(k.Name)
		switch d := k.Default.(type) {
		case string:
			fs.String(name, d, k.Help)
		case int:
			fs.Int(name, d, k.Help)
		case bool:
			fs.Bool(name, d, k.Help)
		case float64:
			fs.Float64(name, d, k.Help)
		case time.Duration:
			fs.Duration(name, d, k.Help)
		case []string:
			fs.StringSlice(name, d, k.Help)
		default:
			panic(fmt.Sprintf("configs: key %s has unsupported default type %T", k.Name, d))
		}
	}
}

// Load builds the configuration: defaults < file < environment < flags that
// were set explicitly. fs may be nil (defaults, file and environment only).
func Load(fs *pflag.FlagSet) (*Config, error) {
	v := viper.New()
	for _, k := range Keys {
		v.SetDefault(k.Name, k.Default)
		if err := v.BindEnv(k.Name, EnvName(k.Name)); err != nil {
			return nil, err
		}
	}
	file := os.Getenv("SSI_CONFIG")
	if fs != nil {
		if f := fs.Lookup("config"); f != nil && f.Changed {
			file = f.Value.String()
		}
		for _, k := range Keys {
			if f := fs.Lookup(FlagName(k.Name)); f != nil {
				if err := v.BindPFlag(k.Name, f); err != nil {
					return nil, err
				}
			}
		}
	}
	if file != "" {
		v.SetConfigFile(file)
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("config file %s: %w", file, err)
		}
		if err := checkUnknown(v); err != nil {
			return nil, fmt.Errorf("config file %s: %w", file, err)
		}
	}
	var c Config
	if err := v.Unmarshal(&c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// checkUnknown refuses keys the file sets that ssi does not know: a typo
// would otherwise be silently ignored.
func checkUnknown(v *viper.Viper) error {
	known := map[string]bool{}
	for _, k := range Keys {
		known[k.Name] = true
	}
	var bad []string
	for _, k := range v.AllKeys() {
		if !known[k] {
			bad = append(bad, k)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("unknown key(s): %s", strings.Join(bad, ", "))
	}
	return nil
}

// Validate checks values that would otherwise fail late and obscurely.
func (c *Config) Validate() error {
	var errs []error
	if c.Node.Port < 1 || c.Node.Port > 65535 {
		errs = append(errs, fmt.Errorf("node.port %d: not a port number", c.Node.Port))
	}
	errs = append(errs, c.validateBalance()...)
	if _, err := netip.ParseAddr(c.Node.BindAddr); err != nil {
		errs = append(errs, fmt.Errorf("node.bind_addr %q: not an IP address", c.Node.BindAddr))
	}
	if c.Node.AdvertiseAddr != "" {
		if _, err := netip.ParseAddr(c.Node.AdvertiseAddr); err != nil {
			errs = append(errs, fmt.Errorf("node.advertise_addr %q: not an IP address", c.Node.AdvertiseAddr))
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel))
	}
	if c.JoinToken != "" && len(c.JoinToken) < 16 {
		errs = append(errs, errors.New("join_token: too short to be a token (ssi token create makes one)"))
	}
	for _, a := range c.Join {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("join %q: want host:port", a))
		}
	}
	if c.JoinToken != "" && c.JoinTokenFile != "" {
		errs = append(errs, errors.New("join_token and join_token_file: set one"))
	}
	if c.Cluster.CertLifetime < 10*time.Second || c.Cluster.TokenTTL <= 0 || c.Jobs.MaxPerUser < 0 {
		errs = append(errs, errors.New("cluster.cert_lifetime must be >= 10s, cluster.token_ttl > 0, jobs.max_per_user >= 0"))
	}
	if c.Discovery.Interval <= 0 || c.Discovery.Wait < 0 || c.Cluster.TelemetryInterval <= 0 || c.Cluster.RemoveAfter <= 0 || c.Cluster.ReadWait <= 0 {
		errs = append(errs, errors.New("discovery.interval, cluster.telemetry_interval, cluster.remove_after and cluster.read_wait must be > 0"))
	}
	if c.Cluster.Voters < 1 {
		errs = append(errs, fmt.Errorf("cluster.voters %d: want >= 1", c.Cluster.Voters))
	}
	switch {
	case c.Home.Backend == "raft":
	case c.Home.Backend == "path" && c.Home.Path != "":
	case c.Home.Backend == "path":
		errs = append(errs, errors.New("home.backend path needs home.path"))
	default:
		errs = append(errs, fmt.Errorf("home.backend %q: want raft or path", c.Home.Backend))
	}
	if c.CRIU.Path == "" {
		errs = append(errs, errors.New("criu.path is empty"))
	}
	if err := ValidateLabName(c.Lab.Name); err != nil {
		errs = append(errs, err)
	}
	if p, err := netip.ParsePrefix(c.Lab.Subnet); err != nil || !p.Addr().Is4() || p.Bits() > 24 {
		errs = append(errs, fmt.Errorf("lab.subnet %q: want an IPv4 prefix of /24 or wider", c.Lab.Subnet))
	}
	if _, err := ParseCPUQuotas(c.Lab.CPUQuota); err != nil {
		errs = append(errs, err)
	}
	if _, err := ParseMemLimits(c.Lab.MemLimit); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ValidateLabName checks a lab name: it becomes part of interface names,
// which Linux limits to 15 bytes.
func ValidateLabName(name string) error {
	if name == "" || len(name) > 8 {
		return fmt.Errorf("lab name %q: want 1 to 8 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return fmt.Errorf("lab name %q: only lowercase letters and digits", name)
		}
	}
	return nil
}

// validateBalance checks the balancer's keys and the node's speed.
func (c *Config) validateBalance() []error {
	var errs []error
	if b := c.Balance; b.Margin < 0 || b.Margin >= 1 || b.MemLow < 0 || b.MemLow >= 0.5 || b.CostFactor < 0 || b.Cooldown < 0 {
		errs = append(errs, errors.New("balance: margin and mem_low want [0,1) and [0,0.5), cost_factor and cooldown 0 or more"))
	}
	if c.Node.Speed < 0 {
		errs = append(errs, fmt.Errorf("node.speed %d: want 0 (measure) or more", c.Node.Speed))
	}
	return errs
}
