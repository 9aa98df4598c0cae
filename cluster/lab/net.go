package lab

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
)

// network owns the lab's bridge and, for each node, its network namespace,
// its veth pair on the bridge, its address and whether it is partitioned.
type network struct {
	layout
	subnet string // IPv4 prefix the nodes' addresses are taken from
}

// Addr is node K's address.
func (n *network) Addr(node string) (netip.Addr, error) {
	k, ok := nodeIndex(node)
	if !ok {
		return netip.Addr{}, fmt.Errorf("%w %q", ErrNoNode, node)
	}
	p, err := netip.ParsePrefix(n.subnet)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("lab subnet %q: %w", n.subnet, err)
	}
	a := p.Masked().Addr().As4()
	host := 10 + k
	a[3] += byte(host)
	return netip.AddrFrom4(a), nil
}

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
func (n *network) ensureBridge() error {
	br := n.bridge()
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
func (n *network) buildNet(k int) error {
	ns, host, peer := n.netnsName(k), n.hostVeth(k), n.peerVeth(k)
	addr, err := n.Addr(nodeName(k))
	if err != nil {
		return err
	}
	bits := netip.MustParsePrefix(n.subnet).Bits()
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
		{"link", "set", host, "master", n.bridge(), "up"},
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
func (n *network) Partition(node string) error {
	k, err := n.node(node)
	if err != nil {
		return err
	}
	if err := ip("link", "set", n.hostVeth(k), "nomaster"); err != nil {
		return err
	}
	return ip("link", "set", n.hostVeth(k), "down")
}

// Heal reconnects a partitioned node.
func (n *network) Heal(node string) error {
	k, err := n.node(node)
	if err != nil {
		return err
	}
	return ip("link", "set", n.hostVeth(k), "master", n.bridge(), "up")
}

// partitioned says whether node k's veth is off the bridge.
func (n *network) partitioned(k int) bool {
	i, err := net.InterfaceByName(n.hostVeth(k))
	if err != nil {
		return false
	}
	if i.Flags&net.FlagUp == 0 {
		return true
	}
	_, err = os.Stat(fmt.Sprintf("/sys/class/net/%s/master", n.hostVeth(k)))
	return err != nil
}

// removeNet deletes node k's network namespace and its veth pair.
func (n *network) removeNet(k int) error {
	var errs []error
	if netnsExists(n.netnsName(k)) {
		if err := ip("netns", "del", n.netnsName(k)); err != nil {
			errs = append(errs, err)
		}
	}
	// Deleting the namespace deletes its veth pair, asynchronously.
	for _, link := range []string{n.hostVeth(k), n.peerVeth(k)} {
		if err := delLink(link); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeBridge deletes the lab's bridge.
func (n *network) removeBridge() error { return delLink(n.bridge()) }
