package main

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/google/nftables/expr"
)

// texts returns each chain's rules as nft syntax.
func texts(rs ruleset) map[string][]string {
	out := map[string][]string{}
	for _, c := range rs.chains {
		out[c.name] = nil
		for _, r := range c.rules {
			out[c.name] = append(out[c.name], r.text)
		}
	}
	return out
}

// TestDefaultRules: no flags is istio-iptables' `-p 15001 -z 15006 -u 1337 -g 1337 -m REDIRECT
// -i '*' -b '*'`, rule for rule.
func TestDefaultRules(t *testing.T) {
	c, m, err := parseFlags(nil, &bytes.Buffer{})
	if err != nil || m != modeInstall {
		t.Fatalf("parseFlags(nil) = mode %d, %v", m, err)
	}
	got := texts(build(c))
	want := map[string][]string{
		"prerouting": {"meta l4proto tcp jump inbound"},
		"inbound": {
			`iifname "lo" return`,
			"tcp dport 15000 return",
			"tcp dport 15001 return",
			"tcp dport 15006 return",
			"tcp dport 15020 return",
			"tcp dport 15021 return",
			"tcp dport 15090 return",
			"meta l4proto tcp redirect to :15006",
		},
		"output": {"meta l4proto tcp jump outbound"},
		"outbound": {
			`oifname "lo" ip saddr 127.0.0.6 return`,
			`oifname "lo" ip daddr != 127.0.0.0/8 meta skuid 1337 meta l4proto tcp redirect to :15006`,
			`oifname "lo" meta skuid != 1337 return`,
			"meta skuid 1337 return",
			`oifname "lo" ip daddr != 127.0.0.0/8 meta skgid 1337 meta l4proto tcp redirect to :15006`,
			`oifname "lo" meta skgid != 1337 return`,
			"meta skgid 1337 return",
			"ip daddr 127.0.0.0/8 return",
			"meta l4proto tcp redirect to :15001",
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("default rules:\n got %q\nwant %q", got, want)
	}
	// The hooks: the NAT chains at prerouting and output, in that order.
	rs := build(c)
	var hooked []string
	for _, ch := range rs.chains {
		if ch.hook != nil {
			hooked = append(hooked, ch.name)
		}
	}
	if !reflect.DeepEqual(hooked, []string{"prerouting", "output"}) {
		t.Errorf("base chains = %v, want [prerouting output]", hooked)
	}
}

// TestFlags: the include/exclude flags and the ports and ids show up where istio-iptables puts
// them.
func TestFlags(t *testing.T) {
	c, _, err := parseFlags([]string{
		"--outbound-port", "16001", "--inbound-port", "16006", "--proxy-uid", "101", "--proxy-gid", "102",
		"--include-inbound-ports", "8080, 9090", "--exclude-inbound-ports", "22",
		"--include-outbound-cidrs", "10.96.0.0/12", "--exclude-outbound-cidrs", "10.96.0.1,169.254.0.0/16",
		"--exclude-outbound-ports", "5432",
	}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	got := texts(build(c))
	for _, want := range []struct{ chain, rule string }{
		{"inbound", "tcp dport 22 return"},
		{"inbound", "tcp dport 8080 redirect to :16006"},
		{"inbound", "tcp dport 9090 redirect to :16006"},
		{"outbound", `oifname "lo" ip daddr != 127.0.0.0/8 meta skuid 101 meta l4proto tcp redirect to :16006`},
		{"outbound", "meta skgid 102 return"},
		{"outbound", "ip daddr 10.96.0.1 return"},
		{"outbound", "ip daddr 169.254.0.0/16 return"},
		{"outbound", "tcp dport 5432 return"},
		{"outbound", "ip daddr 10.96.0.0/12 meta l4proto tcp redirect to :16001"},
	} {
		found := false
		for _, r := range got[want.chain] {
			found = found || r == want.rule
		}
		if !found {
			t.Errorf("chain %s lacks %q: %q", want.chain, want.rule, got[want.chain])
		}
	}
	// Listed ports and CIDRs replace the catch-alls.
	for _, chain := range []string{"inbound", "outbound"} {
		last := got[chain][len(got[chain])-1]
		if strings.HasPrefix(last, "meta l4proto tcp redirect") {
			t.Errorf("chain %s still ends in a catch-all %q", chain, last)
		}
	}
}

// TestNothingCaptured: empty include lists leave out the chains altogether.
func TestNothingCaptured(t *testing.T) {
	c, _, err := parseFlags([]string{"--include-inbound-ports=", "--include-outbound-cidrs="}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if rs := build(c); len(rs.chains) != 0 {
		t.Errorf("chains = %q, want none", texts(rs))
	}
	c.AllOutboundCIDRs = true
	if got := texts(build(c)); got["inbound"] != nil || got["outbound"] == nil {
		t.Errorf("outbound only: chains = %q", got)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--outbound-port", "0"},
		{"--inbound-port", "70000"},
		{"--include-inbound-ports", "http"},
		{"--exclude-inbound-ports", "1,0"},
		{"--exclude-outbound-cidrs", "10.0.0.0/33"},
		{"--include-outbound-cidrs", "fd00::/8"},
		{"--cleanup", "--status"},
		{"extra"},
	} {
		if _, _, err := parseFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("parseFlags(%q) succeeded, want an error", args)
		}
	}
}

func TestModes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want mode
	}{
		{nil, modeInstall},
		{[]string{"--dry-run"}, modeDryRun},
		{[]string{"--cleanup"}, modeCleanup},
		{[]string{"--cleanup", "--dry-run"}, modeCleanupDryRun},
		{[]string{"--status"}, modeStatus},
	} {
		if _, m, err := parseFlags(tc.args, &bytes.Buffer{}); err != nil || m != tc.want {
			t.Errorf("parseFlags(%q) = %d, %v; want %d", tc.args, m, err, tc.want)
		}
	}
}

// TestDryRunPrintsRuleset: --dry-run prints the table as an nft file and nothing else.
func TestDryRunPrintsRuleset(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"--dry-run", "--include-inbound-ports="}, &out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"table ip skiff_capture {", "chain output {",
		"type nat hook output priority -100; policy accept;", "meta l4proto tcp redirect to :15001"} {
		if !strings.Contains(s, want) {
			t.Errorf("dry run lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "chain inbound") {
		t.Errorf("dry run has an inbound chain with no inbound port captured:\n%s", s)
	}
}

// TestExprs checks the kernel expressions of the parts whose encoding is easy to get wrong:
// prefixes, byte orders, interface names, the redirect.
func TestExprs(t *testing.T) {
	p := daddr(netip.MustParsePrefix("10.96.3.4/12"), true)
	wantPrefix := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 240, 0, 0}, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{10, 96, 0, 0}},
	}
	if p.text != "ip daddr != 10.96.0.0/12" || !reflect.DeepEqual(p.exprs, wantPrefix) {
		t.Errorf("daddr: %q %#v", p.text, p.exprs)
	}
	if host := saddr(netip.MustParsePrefix("127.0.0.6/32")); len(host.exprs) != 2 {
		t.Errorf("a /32 needs no mask: %#v", host.exprs)
	}

	r := redirect(15001)
	wantRedirect := []expr.Any{
		&expr.Immediate{Register: 1, Data: []byte{0x3a, 0x99}},
		&expr.Redir{RegisterProtoMin: 1},
	}
	if !reflect.DeepEqual(r.exprs, wantRedirect) {
		t.Errorf("redirect: %#v", r.exprs)
	}

	port := tcpDport(15021)
	last := port.exprs[len(port.exprs)-1].(*expr.Cmp)
	if !bytes.Equal(last.Data, []byte{0x3a, 0xad}) || len(port.exprs) != 4 {
		t.Errorf("tcp dport: %#v", port.exprs)
	}

	uid := skuid(1337, false).exprs[1].(*expr.Cmp)
	if binary.NativeEndian.Uint32(uid.Data) != 1337 {
		t.Errorf("skuid data %v", uid.Data)
	}

	lo := oifname("lo").exprs[1].(*expr.Cmp)
	if len(lo.Data) != 16 || string(lo.Data[:3]) != "lo\x00" {
		t.Errorf("oifname data %q", lo.Data)
	}
}
