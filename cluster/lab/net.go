package lab

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
)

// ip runs iproute2's ip and returns its complaint as the error.
func ip(args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.Command("ip", args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func netnsExists(name string) bool {
	_, err := os.Stat("/run/netns/" + name)
	return err == nil
}

func listNetns() []string {
	entries, _ := os.ReadDir("/run/netns")
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// delLink deletes a link if it exists; one that vanishes meanwhile (a veth
// whose peer's namespace was just deleted) is not an error.
func delLink(name string) error {
	if !linkExists(name) {
		return nil
	}
	if err := ip("link", "del", name); err != nil && linkExists(name) {
		return err
	}
	return nil
}

func listLinks() []string {
	ifs, _ := net.Interfaces()
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return names
}

// ensureBridge creates the lab's bridge. Multicast snooping is off so the
// discovery beacon reaches every node; bridged frames skip the host's
// iptables, whose FORWARD policy (e.g. Docker's DROP) is not the lab's.
func (l *Lab) ensureBridge() error {
	br := l.bridge()
	if !linkExists(br) {
		if err := ip("link", "add", br, "type", "bridge"); err != nil {
			return err
		}
	}
	_ = ip("link", "set", br, "type", "bridge", "mcast_snooping", "0")
	_ = ip("link", "set", br, "type", "bridge", "nf_call_iptables", "0")
	return ip("link", "set", br, "up")
}

// buildNet creates node k's namespace and its veth on the bridge.
func (l *Lab) buildNet(k int) error {
	ns, host, peer := l.netnsName(k), l.hostVeth(k), l.peerVeth(k)
	addr, err := l.Addr(nodeName(k))
	if err != nil {
		return err
	}
	bits := netip.MustParsePrefix(l.opts.Subnet).Bits()
	steps := [][]string{
		{"netns", "add", ns},
		{"link", "add", host, "type", "veth", "peer", "name", peer},
		{"link", "set", peer, "netns", ns},
		{"-n", ns, "link", "set", peer, "name", "eth0"},
		{"-n", ns, "addr", "add", fmt.Sprintf("%s/%d", addr, bits), "dev", "eth0"},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "set", "eth0", "up"},
		// The discovery beacon is multicast; without a route for it a
		// namespace with no default route cannot send it.
		{"-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0"},
		{"link", "set", host, "master", l.bridge(), "up"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

// Partition cuts node off the bridge: its packets go nowhere, and nobody
// else's reach it, until Heal.
func (l *Lab) Partition(node string) error {
	k, err := l.node(node)
	if err != nil {
		return err
	}
	if err := ip("link", "set", l.hostVeth(k), "nomaster"); err != nil {
		return err
	}
	return ip("link", "set", l.hostVeth(k), "down")
}

// Heal reconnects a partitioned node.
func (l *Lab) Heal(node string) error {
	k, err := l.node(node)
	if err != nil {
		return err
	}
	return ip("link", "set", l.hostVeth(k), "master", l.bridge(), "up")
}

// partitioned says whether node k's veth is off the bridge.
func (l *Lab) partitioned(k int) bool {
	i, err := net.InterfaceByName(l.hostVeth(k))
	if err != nil {
		return false
	}
	if i.Flags&net.FlagUp == 0 {
		return true
	}
	_, err = os.Stat(fmt.Sprintf("/sys/class/net/%s/master", l.hostVeth(k)))
	return err != nil
}
