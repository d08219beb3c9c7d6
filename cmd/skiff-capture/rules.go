package main

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// tableName is the nftables table that holds every rule skiff-capture installs. Owning a whole
// table (family ip) is what makes install and cleanup simple and safe: nothing else is ever
// touched, and replacing the table replaces every rule at once.
const tableName = "skiff_capture"

// Chain names. The two base chains hook NAT; the two regular chains hold the decisions, as
// istio-iptables' ISTIO_INBOUND and ISTIO_OUTPUT do.
const (
	chainPrerouting = "prerouting"
	chainInbound    = "inbound"
	chainOutput     = "output"
	chainOutbound   = "outbound"
)

// inboundPassthroughSource is the address the sidecar's InboundPassthroughCluster connects
// from (pilot's inboundPassthroughBindAddress, as istiod's): its connections to the pod's own
// IP over lo must not be captured again.
var inboundPassthroughSource = netip.MustParsePrefix("127.0.0.6/32")

// loopbackNet is never captured on the way out: it is the pod's own localhost (the sidecar
// reaches the application on 127.0.0.1:PORT).
var loopbackNet = netip.MustParsePrefix("127.0.0.0/8")

// config is what the flags say: the ports Envoy listens on, who Envoy runs as, and what to
// capture. Its zero value captures nothing; defaultConfig is Istio's sidecar.
type config struct {
	OutboundPort uint16 // virtualOutbound, istio-iptables -p
	InboundPort  uint16 // virtualInbound, istio-iptables -z
	ProxyUID     uint32 // istio-iptables -u
	ProxyGID     uint32 // istio-iptables -g

	// AllInboundPorts captures every inbound TCP port but the exempt ones ("*" for -b);
	// otherwise only InboundPorts are captured (none: no inbound capture).
	AllInboundPorts      bool
	InboundPorts         []uint16 // istio-iptables -b
	ExcludeInboundPorts  []uint16 // istio-iptables -d, on top of alwaysExemptInboundPorts
	AllOutboundCIDRs     bool     // "*" for -i
	OutboundCIDRs        []netip.Prefix
	ExcludeOutboundCIDRs []netip.Prefix // istio-iptables -x
	ExcludeOutboundPorts []uint16       // istio-iptables -o
}

// alwaysExemptInboundPorts are the sidecar's own ports, never captured inbound: Envoy's admin
// (15000, bound to localhost anyway), the capture ports 15001 and 15006 (a connection to
// them is not redirected to itself), the agent's 15020, health 15021 and Prometheus 15090.
var alwaysExemptInboundPorts = []uint16{15000, 15001, 15006, 15020, 15021, 15090}

func defaultConfig() config {
	return config{
		OutboundPort:     15001,
		InboundPort:      15006,
		ProxyUID:         1337,
		ProxyGID:         1337,
		AllInboundPorts:  true,
		AllOutboundCIDRs: true,
	}
}

// ruleset is the whole table, in order: what --dry-run prints and what install sends.
type ruleset struct {
	chains []chain
}

// chain is one nftables chain. A base chain has a hook; a regular one is only jumped to.
type chain struct {
	name  string
	hook  *nftables.ChainHook // nil for a regular chain
	hookN string              // the hook's name in nft syntax
	prio  string              // the priority (always NAT's dstnat, -100) as nft prints it
	rules []rule
}

// rule is one nftables rule: text is its nft syntax, exprs what the kernel runs. Both are built
// from the same parts, so they cannot disagree (`nft list table ip skiff_capture` prints text).
type rule struct {
	text  string
	exprs []expr.Any
}

// part is a fragment of a rule: a match or a verdict.
type part struct {
	text  string
	exprs []expr.Any
}

func newRule(parts ...part) rule {
	var texts []string
	var exprs []expr.Any
	for _, p := range parts {
		texts = append(texts, p.text)
		exprs = append(exprs, p.exprs...)
	}
	return rule{text: strings.Join(texts, " "), exprs: exprs}
}

// build turns a config into the table's chains and rules. It is pure, so what is installed
// can be checked without a kernel.
func build(c config) ruleset {
	var rs ruleset
	if in := inboundRules(c); len(in) > 0 {
		rs.chains = append(rs.chains,
			chain{name: chainPrerouting, hook: nftables.ChainHookPrerouting, hookN: "prerouting", prio: "dstnat",
				rules: []rule{newRule(l4TCP(), jump(chainInbound))}},
			chain{name: chainInbound, rules: in})
	}
	if out := outboundRules(c); len(out) > 0 {
		rs.chains = append(rs.chains,
			chain{name: chainOutput, hook: nftables.ChainHookOutput, hookN: "output", prio: "-100",
				rules: []rule{newRule(l4TCP(), jump(chainOutbound))}},
			chain{name: chainOutbound, rules: out})
	}
	return rs
}

// inboundRules are istio-iptables' ISTIO_INBOUND in REDIRECT mode: TCP arriving at the pod
// goes to virtualInbound, except on lo and on the sidecar's own ports. Nil if nothing is
// captured inbound.
func inboundRules(c config) []rule {
	if !c.AllInboundPorts && len(c.InboundPorts) == 0 {
		return nil
	}
	rules := []rule{newRule(iifname("lo"), ret())}
	exempt := append(slices.Clone(alwaysExemptInboundPorts), c.ExcludeInboundPorts...)
	slices.Sort(exempt)
	for _, p := range slices.Compact(exempt) {
		rules = append(rules, newRule(tcpDport(p), ret()))
	}
	if c.AllInboundPorts {
		return append(rules, newRule(l4TCP(), redirect(c.InboundPort)))
	}
	for _, p := range c.InboundPorts {
		rules = append(rules, newRule(tcpDport(p), redirect(c.InboundPort)))
	}
	return rules
}

// outboundRules are istio-iptables' ISTIO_OUTPUT in REDIRECT mode: TCP the pod sends goes to
// virtualOutbound, except Envoy's own (uid/gid), loopback, and what is excluded. Envoy calling
// the pod's own IP over lo goes to virtualInbound, so inbound policy applies to it as to
// anyone; the application calling its own IP stays uncaptured. Nil if no CIDR is captured.
func outboundRules(c config) []rule {
	if !c.AllOutboundCIDRs && len(c.OutboundCIDRs) == 0 {
		return nil
	}
	notLoopback := daddr(loopbackNet, true)
	rules := []rule{
		newRule(oifname("lo"), saddr(inboundPassthroughSource), ret()),
		newRule(oifname("lo"), notLoopback, skuid(c.ProxyUID, false), l4TCP(), redirect(c.InboundPort)),
		newRule(oifname("lo"), skuid(c.ProxyUID, true), ret()),
		newRule(skuid(c.ProxyUID, false), ret()),
		newRule(oifname("lo"), notLoopback, skgid(c.ProxyGID, false), l4TCP(), redirect(c.InboundPort)),
		newRule(oifname("lo"), skgid(c.ProxyGID, true), ret()),
		newRule(skgid(c.ProxyGID, false), ret()),
		newRule(daddr(loopbackNet, false), ret()),
	}
	for _, p := range c.ExcludeOutboundCIDRs {
		rules = append(rules, newRule(daddr(p, false), ret()))
	}
	for _, p := range c.ExcludeOutboundPorts {
		rules = append(rules, newRule(tcpDport(p), ret()))
	}
	if c.AllOutboundCIDRs {
		return append(rules, newRule(l4TCP(), redirect(c.OutboundPort)))
	}
	for _, p := range c.OutboundCIDRs {
		rules = append(rules, newRule(daddr(p, false), l4TCP(), redirect(c.OutboundPort)))
	}
	return rules
}

// String renders the ruleset as an `nft -f` file, exactly as `nft list table ip skiff_capture`
// prints it once installed (nft names priority -100 dstnat only for prerouting).
func (rs ruleset) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {\n", tableName)
	for i, c := range rs.chains {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n", c.name)
		if c.hook != nil {
			fmt.Fprintf(&b, "\t\ttype nat hook %s priority %s; policy accept;\n", c.hookN, c.prio)
		}
		for _, r := range c.rules {
			fmt.Fprintf(&b, "\t\t%s\n", r.text)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// The parts. Every match loads into register 1 and compares, as nft itself compiles them.

func l4TCP() part {
	return part{"meta l4proto tcp", []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}}
}

func iifname(name string) part {
	return part{fmt.Sprintf("iifname %q", name), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(name)},
	}}
}

func oifname(name string) part {
	return part{fmt.Sprintf("oifname %q", name), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(name)},
	}}
}

// ifname is an interface name as the kernel compares it: NUL-padded to IFNAMSIZ.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// tcpDport matches TCP with destination port p (the protocol check comes first, as nft's
// dependency would: the port is read from the transport header).
func tcpDport(p uint16) part {
	exprs := append(l4TCP().exprs,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, p)},
	)
	return part{"tcp dport " + strconv.Itoa(int(p)), exprs}
}

func saddr(p netip.Prefix) part { return addrMatch("saddr", 12, p, false) }

func daddr(p netip.Prefix, negate bool) part { return addrMatch("daddr", 16, p, negate) }

// addrMatch compares the IPv4 header's address at offset with prefix p: the whole address for
// a /32, else the address masked to the prefix length.
func addrMatch(field string, offset uint32, p netip.Prefix, negate bool) part {
	p = p.Masked()
	op, opText := expr.CmpOpEq, ""
	if negate {
		op, opText = expr.CmpOpNeq, "!= "
	}
	exprs := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4}}
	text := p.Addr().String()
	if p.Bits() < 32 {
		mask := binary.BigEndian.AppendUint32(nil, ^uint32(0)<<(32-p.Bits()))
		if p.Bits() == 0 {
			mask = []byte{0, 0, 0, 0}
		}
		exprs = append(exprs, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)})
		text = p.String()
	}
	a := p.Addr().As4()
	exprs = append(exprs, &expr.Cmp{Op: op, Register: 1, Data: a[:]})
	return part{fmt.Sprintf("ip %s %s%s", field, opText, text), exprs}
}

func skuid(id uint32, negate bool) part { return ownerMatch("skuid", expr.MetaKeySKUID, id, negate) }

func skgid(id uint32, negate bool) part { return ownerMatch("skgid", expr.MetaKeySKGID, id, negate) }

// ownerMatch compares the sending socket's owner (uid or gid), in host byte order.
func ownerMatch(name string, key expr.MetaKey, id uint32, negate bool) part {
	op, opText := expr.CmpOpEq, ""
	if negate {
		op, opText = expr.CmpOpNeq, "!= "
	}
	return part{fmt.Sprintf("meta %s %s%d", name, opText, id), []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, id)},
	}}
}

// redirect is nft's `redirect to :PORT`: conntrack NAT to the local address of the incoming
// interface (127.0.0.1 for locally sent traffic) and port, keeping the original destination
// for SO_ORIGINAL_DST, which Envoy's original_dst listener filter reads.
func redirect(port uint16) part {
	return part{"redirect to :" + strconv.Itoa(int(port)), []expr.Any{
		&expr.Immediate{Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
		&expr.Redir{RegisterProtoMin: 1},
	}}
}

func ret() part {
	return part{"return", []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}}
}

func jump(to string) part {
	return part{"jump " + to, []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: to}}}
}
