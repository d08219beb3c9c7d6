package framework

import (
	"context"
	"fmt"
	"net"
	"testing"
)

// StartPilotInNetNS starts a pilot inside ns, for tests where proxies reach pilot over a
// network of the test's own (a veth to a pod namespace) so that pilot sees each proxy's
// connection come from its Pod's IP, as in a cluster. Flags are StartPilot's, but for the
// plaintext xDS port, which listens on every address of ns (at XDSAddress's port). The
// monitoring and xDS addresses are forwarded from the same addresses on the root namespace's
// loopback, so that Get, Syncz, Bootstrap and the rest work as for StartPilot. forwardIn are addresses (HOST:PORT on the root namespace's loopback: the API
// server, say) that the pilot reaches at the same address inside ns. Restart and Kill work as
// for StartPilot: the pilot starts again inside ns.
func StartPilotInNetNS(tb testing.TB, ns *NetNS, opts PilotOptions, forwardIn ...string) *Pilot {
	tb.Helper()
	for _, addr := range forwardIn {
		l := ns.Listen(tb, addr)
		Forward(tb, l, func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		})
	}
	p := newPilot(tb, opts)
	p.pickAddresses(tb, opts)
	_, xdsPort, err := net.SplitHostPort(p.XDSAddress)
	if err != nil {
		tb.Fatalf("framework: %v", err)
	}
	p.args = append(p.args, "--xds-address", net.JoinHostPort("0.0.0.0", xdsPort))
	p.enter = ns.enter
	for _, addr := range []string{p.MonitoringAddress, p.XDSAddress} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			tb.Fatalf("framework: forwarding %s into network namespace %s: %v", addr, ns.Name, err)
		}
		Forward(tb, l, func(ctx context.Context) (net.Conn, error) { return ns.DialContext(ctx, "tcp", addr) })
	}
	fmt.Fprintf(&p.log, "[framework: pilot runs in network namespace %s]\n", ns.Name)
	if err := p.launch(); err != nil {
		tb.Fatalf("framework: starting the pilot in network namespace %s: %v", ns.Name, err)
	}
	return p
}
