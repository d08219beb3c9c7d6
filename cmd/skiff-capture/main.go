// Command skiff-capture installs the traffic capture of a Skiff sidecar in the current network
// namespace: it is the init container's program, Skiff's istio-iptables.
//
// In REDIRECT mode, as istio-iptables does it:
//
//   - TCP the pod sends goes to Envoy's virtualOutbound (--outbound-port, 15001), except
//     traffic of the proxy's uid and gid (Envoy's own, 1337: capturing it would loop), to
//     127.0.0.0/8, over lo from a non-proxy process (the application calling its own pod IP),
//     from 127.0.0.6 over lo (the sidecar's inbound passthrough), and --exclude-outbound-cidrs
//     / --exclude-outbound-ports. The proxy calling its own pod IP over lo goes to
//     virtualInbound instead, so that inbound policy applies to it.
//   - TCP arriving at the pod goes to virtualInbound (--inbound-port, 15006), except on lo, to
//     the sidecar's own ports 15000, 15001, 15006, 15020, 15021 and 15090, and to
//     --exclude-inbound-ports; --include-inbound-ports narrows it to a list.
//
// Istio's `istio-iptables -p 15001 -z 15006 -u 1337 -g 1337 -m REDIRECT -i '*' -b '*'` is the
// default, i.e. `skiff-capture` with no flags. --dry-run prints the rules as an `nft -f` file
// (the very text `nft list table ip skiff_capture` prints once they are installed) and changes
// nothing; --cleanup removes them; --status says whether they are installed. A
// re-run replaces the rules, so running it twice is the same as once. Only IPv4 is captured,
// as istio-iptables does unless IPv6 is turned on.
//
// # Why nftables, over netlink
//
// The rules are nftables rules in a table of their own (table ip skiff_capture, chains
// prerouting/inbound and output/outbound), written with github.com/google/nftables over
// netlink, not iptables:
//
//   - The init image is this one static binary (CGO_ENABLED=0), with no iptables userland,
//     no shell and no libraries to ship, patch and match to the node's kernel. iptables would
//     need its binaries, and the right flavour of them: on current distributions `iptables` is
//     iptables-nft, which writes nf_tables rules anyway, through a compatibility layer.
//   - One netlink batch is one transaction: the table is replaced whole or not at all, so a
//     re-run is idempotent and a failed run leaves the namespace as it was.
//   - Owning a table, not chains in the shared nat table, means nothing else in the namespace
//     (a CNI's rules, say) is ever touched, and --cleanup is deleting that table.
//   - nf_tables with NAT and `redirect` has been in mainline Linux since 3.18 and is built into
//     the kernels Kubernetes nodes run. Checked on this repository's test kernel (6.18) in a
//     fresh network namespace: the table installs, `nft list table ip skiff_capture` reads back
//     exactly what --dry-run prints, and `redirect to :15001` hands the connection to Envoy
//     with conntrack keeping the original destination, which Envoy's original_dst listener
//     filter reads with SO_ORIGINAL_DST as it does after iptables' REDIRECT (test/capture
//     proves it end to end, with a real Envoy fed by pilot).
//
// Caveat: iptables NAT rules in the same namespace (a CNI's, say) still run, at their own
// priority; whichever NAT chain binds a connection first decides it.
//
// It needs CAP_NET_ADMIN in the pod's network namespace (the init container's only
// capability besides CAP_NET_RAW in Istio), and nothing else.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // -h or --help: the usage went to stdout
		}
		fmt.Fprintf(os.Stderr, "skiff-capture: %v\n", err)
		os.Exit(1)
	}
}

// run is main with its arguments and output given, so that flag handling can be tested.
func run(args []string, stdout io.Writer) error {
	c, mode, err := parseFlags(args, stdout)
	if err != nil {
		return err
	}
	rs := build(c)
	switch mode {
	case modeDryRun:
		_, err := fmt.Fprint(stdout, rs.String())
		return err
	case modeCleanupDryRun:
		_, err := fmt.Fprintf(stdout, "delete table ip %s\n", tableName)
		return err
	case modeCleanup:
		if err := cleanup(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed table ip %s\n", tableName)
		return nil
	case modeStatus:
		ok, err := installed()
		if err != nil {
			return err
		}
		if ok {
			fmt.Fprintf(stdout, "table ip %s is installed\n", tableName)
		} else {
			fmt.Fprintf(stdout, "table ip %s is not installed\n", tableName)
		}
		return nil
	}
	n, err := install(rs)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "installed table ip %s: %d rules\n", tableName, n)
	return nil
}

type mode int

const (
	modeInstall mode = iota
	modeDryRun
	modeCleanup
	modeCleanupDryRun
	modeStatus
)

// parseFlags reads the command line into a config and what to do with it.
func parseFlags(args []string, output io.Writer) (config, mode, error) {
	c := defaultConfig()
	fs := flag.NewFlagSet("skiff-capture", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.Usage = func() {
		fmt.Fprintf(output, "usage: skiff-capture [flags]\n\nInstalls (or with --cleanup removes) a Skiff sidecar's traffic capture in the current network namespace.\n\n")
		fs.PrintDefaults()
	}
	outPort := fs.Uint("outbound-port", uint(c.OutboundPort), "port of Envoy's virtualOutbound listener (istio-iptables -p)")
	inPort := fs.Uint("inbound-port", uint(c.InboundPort), "port of Envoy's virtualInbound listener (istio-iptables -z)")
	uid := fs.Uint("proxy-uid", uint(c.ProxyUID), "uid Envoy runs as; its traffic is never captured (istio-iptables -u)")
	gid := fs.Uint("proxy-gid", uint(c.ProxyGID), "gid Envoy runs as; its traffic is never captured (istio-iptables -g)")
	inInclude := fs.String("include-inbound-ports", "*", "inbound TCP ports to capture, comma-separated, '*' for all, empty for none (istio-iptables -b)")
	inExclude := fs.String("exclude-inbound-ports", "", "inbound TCP ports not to capture with '*', comma-separated (istio-iptables -d)")
	outInclude := fs.String("include-outbound-cidrs", "*", "IPv4 destinations to capture, comma-separated CIDRs, '*' for all, empty for none (istio-iptables -i)")
	outExclude := fs.String("exclude-outbound-cidrs", "", "IPv4 destinations not to capture, comma-separated CIDRs (istio-iptables -x)")
	outExcludePorts := fs.String("exclude-outbound-ports", "", "outbound TCP destination ports not to capture, comma-separated (istio-iptables -o)")
	dryRun := fs.Bool("dry-run", false, "print the rules (an `nft -f` file) instead of installing them")
	clean := fs.Bool("cleanup", false, "remove the rules instead of installing them")
	status := fs.Bool("status", false, "say whether the rules are installed, and change nothing")
	if err := fs.Parse(args); err != nil {
		return c, 0, err
	}
	if fs.NArg() > 0 {
		return c, 0, fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	var errs []error
	port := func(name string, v uint) uint16 {
		if v == 0 || v > 65535 {
			errs = append(errs, fmt.Errorf("--%s %d: not a port", name, v))
		}
		return uint16(v)
	}
	id := func(name string, v uint) uint32 {
		if uint64(v) > math.MaxUint32 {
			errs = append(errs, fmt.Errorf("--%s %d: out of range", name, v))
		}
		return uint32(v)
	}
	c.OutboundPort = port("outbound-port", *outPort)
	c.InboundPort = port("inbound-port", *inPort)
	c.ProxyUID = id("proxy-uid", *uid)
	c.ProxyGID = id("proxy-gid", *gid)

	var err error
	if c.AllInboundPorts, c.InboundPorts, err = parsePortsOrAll(*inInclude); err != nil {
		errs = append(errs, fmt.Errorf("--include-inbound-ports: %w", err))
	}
	if c.ExcludeInboundPorts, err = parsePorts(*inExclude); err != nil {
		errs = append(errs, fmt.Errorf("--exclude-inbound-ports: %w", err))
	}
	if c.AllOutboundCIDRs, c.OutboundCIDRs, err = parseCIDRsOrAll(*outInclude); err != nil {
		errs = append(errs, fmt.Errorf("--include-outbound-cidrs: %w", err))
	}
	if c.ExcludeOutboundCIDRs, err = parseCIDRs(*outExclude); err != nil {
		errs = append(errs, fmt.Errorf("--exclude-outbound-cidrs: %w", err))
	}
	if c.ExcludeOutboundPorts, err = parsePorts(*outExcludePorts); err != nil {
		errs = append(errs, fmt.Errorf("--exclude-outbound-ports: %w", err))
	}
	if *clean && *status {
		errs = append(errs, errors.New("--cleanup and --status exclude each other"))
	}
	if err := errors.Join(errs...); err != nil {
		return c, 0, err
	}

	switch {
	case *status:
		return c, modeStatus, nil
	case *clean && *dryRun:
		return c, modeCleanupDryRun, nil
	case *clean:
		return c, modeCleanup, nil
	case *dryRun:
		return c, modeDryRun, nil
	}
	return c, modeInstall, nil
}

// splitList splits a comma-separated flag value, ignoring blanks around items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func parsePorts(s string) ([]uint16, error) {
	var ports []uint16
	for _, item := range splitList(s) {
		p, err := strconv.ParseUint(item, 10, 16)
		if err != nil || p == 0 {
			return nil, fmt.Errorf("%q is not a port", item)
		}
		ports = append(ports, uint16(p))
	}
	return ports, nil
}

func parsePortsOrAll(s string) (bool, []uint16, error) {
	if strings.TrimSpace(s) == "*" {
		return true, nil, nil
	}
	ports, err := parsePorts(s)
	return false, ports, err
}

// parseCIDRs reads IPv4 prefixes; a bare address is a /32.
func parseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range splitList(s) {
		var p netip.Prefix
		var err error
		if strings.Contains(item, "/") {
			p, err = netip.ParsePrefix(item)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(item); err == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR: %w", item, err)
		}
		if !p.Addr().Is4() {
			return nil, fmt.Errorf("%q is not IPv4 (only IPv4 is captured)", item)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func parseCIDRsOrAll(s string) (bool, []netip.Prefix, error) {
	if strings.TrimSpace(s) == "*" {
		return true, nil, nil
	}
	cidrs, err := parseCIDRs(s)
	return false, cidrs, err
}
