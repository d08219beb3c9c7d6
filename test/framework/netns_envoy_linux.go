package framework

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// NetNSEnvoyAdmin is where an Envoy started by StartEnvoyInNetNS serves its admin interface,
// inside its namespace. The port is fixed, as in a pod: the namespace is the test's own.
const NetNSEnvoyAdmin = "127.0.0.1:15000"

// NetNSEnvoyOptions configures StartEnvoyInNetNS.
type NetNSEnvoyOptions struct {
	// NodeID is the proxy's node ID; it should name the namespace's address, e.g.
	// "sidecar~10.251.0.2~app-1.default~default.svc.cluster.local". Required.
	NodeID string
	// XDSAddress is the pilot's ADS as reached from inside the namespace (e.g. a Forward
	// listener there); it replaces the pilot's own loopback address in the bootstrap.
	XDSAddress string
	// Interception is passed as `pilot bootstrap --interception` if set.
	Interception string
	// UID and GID are who Envoy runs as (a sidecar's are 1337); supplementary groups are
	// dropped.
	UID, GID uint32
	// BootstrapArgs are extra `pilot bootstrap` flags; EnvoyArgs extra Envoy flags.
	BootstrapArgs, EnvoyArgs []string
	// AllowRejections turns off the check, when the test ends, that Envoy rejected no update.
	AllowRejections bool
}

// StartEnvoyInNetNS starts an Envoy inside ns, as opts.UID/opts.GID, bootstrapped by `pilot
// bootstrap` to fetch its config from p at opts.XDSAddress, with its admin interface on
// NetNSEnvoyAdmin inside the namespace. The returned Envoy's AdminAddress is a forwarder on
// the root namespace's loopback to that admin interface, so every Envoy method (Stats,
// WaitStat, ConfigDump...) works as for StartEnvoy. It waits, as StartEnvoy does, until Envoy
// is LIVE and has had CDS and LDS; when the test ends it checks that Envoy rejected no
// update, and stops it.
//
// Envoy runs from a hard link (or copy) of EnvoyBinary in a directory of its own, readable by
// any user: the installed binary may sit under a directory only root can enter.
func StartEnvoyInNetNS(tb testing.TB, p *Pilot, ns *NetNS, opts NetNSEnvoyOptions) *Envoy {
	tb.Helper()
	if opts.NodeID == "" || opts.XDSAddress == "" {
		tb.Fatalf("framework: StartEnvoyInNetNS needs a NodeID and an XDSAddress")
	}
	args := []string{"--admin-address", NetNSEnvoyAdmin, "--xds-address", opts.XDSAddress}
	if opts.Interception != "" {
		args = append(args, "--interception", opts.Interception)
	}
	bootstrap := p.Bootstrap(tb, opts.NodeID, append(args, opts.BootstrapArgs...)...)

	dir := proxyDir(tb, opts.UID, opts.GID)
	binary := filepath.Join(dir, "envoy")
	if err := linkOrCopy(EnvoyBinary(tb), binary); err != nil {
		tb.Fatalf("framework: making Envoy runnable by uid %d: %v", opts.UID, err)
	}
	e := &Envoy{
		NodeID:        opts.NodeID,
		BootstrapPath: filepath.Join(dir, "bootstrap.yaml"),
		opts:          EnvoyOptions{NodeID: opts.NodeID, AllowRejections: opts.AllowRejections},
	}
	if err := os.WriteFile(e.BootstrapPath, []byte(bootstrap), 0o644); err != nil {
		tb.Fatalf("framework: writing Envoy's bootstrap: %v", err)
	}
	name := fmt.Sprintf("envoy %s in %s", opts.NodeID, ns.Name)
	logOnFailure(tb, name, &e.log)
	fmt.Fprintf(&e.log, "---- bootstrap ----\n%s\n---- end of bootstrap ----\n", strings.TrimRight(bootstrap, "\n"))

	adminPath := filepath.Join(dir, "admin-address")
	cred := &syscall.Credential{Uid: opts.UID, Gid: opts.GID, Groups: []uint32{}}
	proc, err := startProcessInNetNS(name, ns, binary, envoyArgs(e.BootstrapPath, adminPath, opts.EnvoyArgs), cred, &e.log)
	if err != nil {
		tb.Fatalf("framework: starting Envoy %s: %v", opts.NodeID, err)
	}
	e.proc = proc

	admin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		proc.Stop(&e.log)
		tb.Fatalf("framework: listening for Envoy's admin forwarder: %v", err)
	}
	Forward(tb, admin, func(ctx context.Context) (net.Conn, error) {
		return ns.DialContext(ctx, "tcp", NetNSEnvoyAdmin)
	})
	e.AdminAddress = admin.Addr().String()
	// Registered after the forwarder's cleanup, so it runs first, while admin still answers.
	tb.Cleanup(func() { e.cleanup(tb) })

	// The admin address Envoy writes is inside the namespace; the forwarder's stays.
	err = e.waitLive(adminPath, false)
	if err == nil {
		err = proc.WaitFor(Patience, e.initialXDSCheck)
	}
	if err != nil {
		tb.Fatalf("framework: Envoy %s in %s did not start with its config from the pilot at %s: %v",
			opts.NodeID, ns.Name, opts.XDSAddress, err)
	}
	return e
}

// proxyDir makes a directory that uid/gid own and everyone may enter, removed when the test
// ends (tb.TempDir's directories are root's alone).
func proxyDir(tb testing.TB, uid, gid uint32) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "skiff-netns-envoy-")
	if err != nil {
		tb.Fatalf("framework: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatalf("framework: %v", err)
	}
	if err := os.Chown(dir, int(uid), int(gid)); err != nil {
		tb.Fatalf("framework: %v", err)
	}
	return dir
}

// linkOrCopy makes dst the file src resolves to: a hard link if both are on one file system,
// else a copy, executable by everyone either way.
func linkOrCopy(src, dst string) error {
	real, err := filepath.EvalSymlinks(src)
	if err != nil {
		return err
	}
	if os.Link(real, dst) == nil {
		return nil
	}
	in, err := os.Open(real)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s to %s: %w", real, dst, err)
	}
	return out.Close()
}

// startProcessInNetNS is startProcess for a process in ns, as cred's user: it is started from
// a thread that entered ns (a child inherits its parent thread's namespaces).
func startProcessInNetNS(name string, ns *NetNS, path string, args []string, cred *syscall.Credential, log *logBuffer) (*Process, error) {
	fmt.Fprintf(log, "$ ip netns exec %s %s %s  # as uid %d, gid %d\n", ns.Name, path, strings.Join(args, " "), cred.Uid, cred.Gid)
	p, err := launch(name, path, args, log, func(cmd *exec.Cmd) { cmd.SysProcAttr.Credential = cred }, ns.enter)
	if err != nil {
		return nil, fmt.Errorf("in network namespace %s: %w", ns.Name, err)
	}
	return p, nil
}

// BuildBinary builds the main package pkg (e.g. "./cmd/skiff-capture") of this repository
// into a directory of the test's, and returns the binary's path.
func BuildBinary(tb testing.TB, pkg string) string {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), filepath.Base(pkg))
	if err := goBuild(RepoRoot(tb), out, pkg); err != nil {
		tb.Fatalf("framework: %v", err)
	}
	return out
}
