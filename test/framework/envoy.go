package framework

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// EnvoyOptions configures StartEnvoy.
type EnvoyOptions struct {
	// NodeID is the proxy's node ID, e.g.
	// "sidecar~127.0.0.2~app-1.default~default.svc.cluster.local". By default
	// a unique sidecar ID on 127.0.0.1 is made up.
	NodeID string
	// Delta asks `pilot bootstrap` for delta xDS (--delta).
	Delta bool
	// Interception is passed as `pilot bootstrap --interception` if set.
	Interception string
	// BootstrapArgs are extra `pilot bootstrap` flags.
	BootstrapArgs []string
	// EnvoyArgs are extra Envoy flags, e.g. "--component-log-level",
	// "upstream:debug".
	EnvoyArgs []string
	// AllowRejections turns off the check, when the test ends, that Envoy
	// rejected no xDS update; only for tests that feed Envoy bad config on
	// purpose.
	AllowRejections bool
	// ExpectRejections allows only the rejections it names: Envoy may reject
	// xDS updates when every rejection in its log ("gRPC config for TYPE
	// rejected: REASON") contains one of these texts, and such an Envoy is not
	// counted as rejecting in the suite's zero-NACK tally. For tests that feed
	// Envoy one bad resource on purpose; any other rejection still fails.
	ExpectRejections []string
}

// Envoy is a running Envoy process.
type Envoy struct {
	AdminAddress  string // host:port of the admin interface
	NodeID        string
	BootstrapPath string

	opts EnvoyOptions
	log  logBuffer
	proc *Process
}

var envoyCount atomic.Int64

// StartEnvoy starts an Envoy bootstrapped by `pilot bootstrap` to fetch its
// config from p, with the admin interface on a free port of 127.0.0.1, and
// waits until it is LIVE (admin /ready answers 200) and has had CDS and LDS
// from the pilot. Envoy goes LIVE anyway when its initial fetch times out
// (15s by default); the second check makes that a failure instead of a slow
// pass.
//
// When the test ends, Envoy is checked for rejected xDS updates (see
// AssertNoRejections), then stopped; its log is printed if the test failed.
// An Envoy that exits on its own before then fails the test.
func StartEnvoy(tb testing.TB, p *Pilot, opts EnvoyOptions) *Envoy {
	tb.Helper()
	if opts.NodeID == "" {
		opts.NodeID = fmt.Sprintf("sidecar~127.0.0.1~envoy-%d.default~default.svc.cluster.local", envoyCount.Add(1))
	}
	var e *Envoy
	for attempt := 1; ; attempt++ {
		// The pilot's bootstrap holds a fixed admin port, so the harness
		// picks a free one for it. AdminAddress is what Envoy reports having
		// bound (--admin-address-path), right whatever the bootstrap holds.
		args := []string{"--admin-address", FreeAddress(tb, "127.0.0.1")}
		if opts.Delta {
			args = append(args, "--delta")
		}
		if opts.Interception != "" {
			args = append(args, "--interception", opts.Interception)
		}
		args = append(args, opts.BootstrapArgs...)
		var err error
		var portRace bool
		e, portRace, err = launchEnvoy(tb, p.Bootstrap(tb, opts.NodeID, args...), opts)
		if err == nil {
			break
		}
		if attempt < 3 && portRace {
			continue
		}
		tb.Fatalf("framework: starting Envoy %s: %v", opts.NodeID, err)
	}
	if err := e.proc.WaitFor(Patience, e.initialXDSCheck); err != nil {
		tb.Fatalf("framework: Envoy %s is LIVE but did not get its initial config from the pilot at %s: %v",
			e.NodeID, p.XDSAddress, err)
	}
	return e
}

// initialXDSCheck passes once CDS and LDS have each been accepted at least
// once.
func (e *Envoy) initialXDSCheck() error {
	stats, err := e.stats(`^(cluster_manager\.cds|listener_manager\.lds)\.|^control_plane\.connected_state$`)
	if err != nil {
		return err
	}
	var missing []string
	for _, name := range []string{"cluster_manager.cds.update_success", "listener_manager.lds.update_success"} {
		if stats[name] == 0 {
			missing = append(missing, name+" = 0")
		}
	}
	if len(missing) == 0 {
		return nil
	}
	var seen []string
	for _, name := range []string{
		"control_plane.connected_state",
		"cluster_manager.cds.init_fetch_timeout", "listener_manager.lds.init_fetch_timeout",
		"cluster_manager.cds.update_rejected", "listener_manager.lds.update_rejected",
	} {
		seen = append(seen, fmt.Sprintf("%s = %d", name, stats[name]))
	}
	return fmt.Errorf("%s (%s)", strings.Join(missing, ", "), strings.Join(seen, ", "))
}

// startEnvoyWithBootstrap starts Envoy with a bootstrap given inline, for
// tests of the harness itself and of config the pilot does not make. The
// bootstrap must configure an admin listener; port 0 is best (Envoy picks
// one and the harness reads it back).
func startEnvoyWithBootstrap(tb testing.TB, bootstrap string, opts EnvoyOptions) *Envoy {
	tb.Helper()
	e, _, err := launchEnvoy(tb, bootstrap, opts)
	if err != nil {
		tb.Fatalf("framework: starting Envoy %s: %v", opts.NodeID, err)
	}
	return e
}

// launchEnvoy runs Envoy on bootstrap and waits for admin /ready. On failure
// it says whether the cause looks like a lost race for a port.
func launchEnvoy(tb testing.TB, bootstrap string, opts EnvoyOptions) (*Envoy, bool, error) {
	tb.Helper()
	dir := tb.TempDir()
	e := &Envoy{NodeID: opts.NodeID, BootstrapPath: filepath.Join(dir, "bootstrap.yaml"), opts: opts}
	if err := os.WriteFile(e.BootstrapPath, []byte(bootstrap), 0o644); err != nil {
		return nil, false, err
	}
	name := "envoy"
	if e.NodeID != "" {
		name += " " + e.NodeID
	}
	logOnFailure(tb, name, &e.log)
	fmt.Fprintf(&e.log, "---- bootstrap ----\n%s\n---- end of bootstrap ----\n", strings.TrimRight(bootstrap, "\n"))

	adminPath := filepath.Join(dir, "admin-address")
	proc, err := StartProcess(name, EnvoyBinary(tb), envoyArgs(e.BootstrapPath, adminPath, opts.EnvoyArgs), &e.log)
	if err != nil {
		return nil, false, err
	}
	e.proc = proc
	tb.Cleanup(func() { e.cleanup(tb) })

	if err := e.waitLive(adminPath, true); err != nil {
		proc.Stop(&e.log)
		return nil, addressInUse(e.log.String()), err
	}
	return e, false, nil
}

// EnvoyDrainArgs are the drain flags `pilot bootstrap` documents and the injector passes
// (bootstrap.DrainArgs, which this package cannot import: pkg/bootstrap imports pkg/model,
// whose tests use the framework; pkg/bootstrap's tests check that the two agree).
var EnvoyDrainArgs = []string{"--drain-time-s", "45", "--drain-strategy", "immediate"}

// envoyArgs is the command line of every Envoy the harness starts, with the test's own flags
// last. SKIFF_ENVOY_LOG_LEVEL overrides the log level (warn). The drain flags are
// EnvoyDrainArgs, each unless the test gives its own (Envoy refuses a flag given twice).
func envoyArgs(bootstrapPath, adminPath string, extra []string) []string {
	level := os.Getenv("SKIFF_ENVOY_LOG_LEVEL")
	if level == "" {
		level = "warn"
	}
	args := []string{
		"-c", bootstrapPath,
		"--admin-address-path", adminPath,
		// No shared memory or domain socket between Envoys, so any number
		// can run at once.
		"--disable-hot-restart",
		"--concurrency", "1",
		"--log-level", level,
	}
	drain := EnvoyDrainArgs
	for i := 0; i+1 < len(drain); i += 2 {
		if !slices.Contains(extra, drain[i]) {
			args = append(args, drain[i], drain[i+1])
		}
	}
	return append(args, extra...)
}

// waitLive waits, within Patience, until Envoy has written its admin address to adminPath,
// which becomes e.AdminAddress when fromFile, and its admin answers /ready.
func (e *Envoy) waitLive(adminPath string, fromFile bool) error {
	deadline := time.Now().Add(Patience)
	err := e.proc.WaitFor(Patience, func() error {
		b, err := os.ReadFile(adminPath)
		if err != nil || len(strings.TrimSpace(string(b))) == 0 {
			return fmt.Errorf("admin address not yet written to %s", adminPath)
		}
		if fromFile {
			e.AdminAddress = strings.TrimSpace(string(b))
		}
		return nil
	})
	if err == nil {
		err = e.proc.WaitFor(time.Until(deadline), readyCheck(e.AdminAddress, "/ready"))
	}
	return err
}

// cleanup runs when the test ends: an Envoy still running is checked for
// rejected updates and stopped.
func (e *Envoy) cleanup(tb testing.TB) {
	tb.Helper()
	if err := e.proc.UnexpectedExit(); err != nil {
		e.proc.stopping.Store(true) // reported once
		tb.Errorf("framework: %v", err)
		return
	}
	if gone, _ := e.proc.Exited(); !gone && e.AdminAddress != "" {
		err := e.checkNoRejections()
		if err != nil && e.onlyExpectedRejections() {
			err = nil
		}
		suiteTally.record(err != nil)
		if err != nil && !e.opts.AllowRejections {
			tb.Errorf("framework: Envoy %s: %v", e.NodeID, err)
		}
	}
	e.proc.Stop(&e.log)
}

// suiteTally counts, over the whole test process, the Envoys checked for rejected xDS updates
// when they stopped and how many had rejected any, so a suite can assert zero NACKs once at the
// end (see SuiteRejections).
var suiteTally tally

type tally struct{ checked, rejecting atomic.Int64 }

func (t *tally) record(rejected bool) {
	t.checked.Add(1)
	if rejected {
		t.rejecting.Add(1)
	}
}

// SuiteRejections reports how many Envoys this test process checked when they stopped, and how
// many of those had rejected at least one xDS update (tests that allow rejections included).
func SuiteRejections() (checked, rejecting int64) {
	return suiteTally.checked.Load(), suiteTally.rejecting.Load()
}

// Stop stops Envoy (SIGTERM, then SIGKILL after 10s), after the same checks
// as at the end of the test: that it did not exit on its own, and that it
// rejected no update. Stopping a stopped Envoy does nothing.
func (e *Envoy) Stop(tb testing.TB) {
	tb.Helper()
	e.cleanup(tb)
}

// Log returns what Envoy has written to stdout and stderr so far.
func (e *Envoy) Log() string { return e.log.String() }

// Get makes a GET request to the admin interface and returns the status and
// body; it fails the test only if no response came back.
func (e *Envoy) Get(tb testing.TB, path string) (int, []byte) {
	tb.Helper()
	status, body, err := httpGet(e.AdminAddress, path)
	if err != nil {
		tb.Fatalf("framework: Envoy %s admin GET %s: %v", e.NodeID, path, err)
	}
	return status, body
}

// Post makes a POST request to the admin interface (endpoints that change
// state, e.g. /healthcheck/fail, only take POST).
func (e *Envoy) Post(tb testing.TB, path string) (int, []byte) {
	tb.Helper()
	status, body, err := adminRequest(http.MethodPost, e.AdminAddress, path)
	if err != nil {
		tb.Fatalf("framework: Envoy %s admin POST %s: %v", e.NodeID, path, err)
	}
	return status, body
}

// ConfigDump returns the raw JSON of /config_dump?include_eds.
func (e *Envoy) ConfigDump(tb testing.TB) []byte {
	tb.Helper()
	status, body := e.Get(tb, "/config_dump?include_eds")
	if status != http.StatusOK {
		tb.Fatalf("framework: Envoy %s /config_dump: status %d: %s", e.NodeID, status, body)
	}
	if !json.Valid(body) {
		tb.Fatalf("framework: Envoy %s /config_dump is not JSON: %.200s", e.NodeID, body)
	}
	return body
}
