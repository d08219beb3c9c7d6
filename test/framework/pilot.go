package framework

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// PilotOptions configures StartPilot.
type PilotOptions struct {
	// ConfigDir is the directory the pilot watches; by default a new
	// tb.TempDir(). Files written before the start are the first config load.
	ConfigDir string
	// Kubeconfig switches the pilot to Kubernetes mode (--kubeconfig instead of
	// --config-dir): it watches that cluster, as whoever the kubeconfig names.
	Kubeconfig string
	// Args are extra flags, after the ones the harness sets (--config-dir or
	// --kubeconfig, --xds-address, --monitoring-address, --ca-dir a temporary
	// directory, and --xds-tls-address empty, i.e. off); a flag given again
	// here wins.
	Args []string
	// Dir is the pilot's working directory (by default the test's), and Env
	// extra environment variables (KEY=VALUE, after the test's own): a test
	// that checks what pilot writes to disk gives it a working directory and a
	// TMPDIR of its own.
	Dir string
	Env []string
}

// Pilot is a running pilot process, listening on free loopback ports.
type Pilot struct {
	XDSAddress        string // host:port serving ADS
	MonitoringAddress string // host:port serving /ready, /metrics, /debug/...
	ConfigDir         string

	binary string
	caDir  string
	args   []string
	dir    string
	env    []string
	enter  func() error // if set, run on the starting thread first (StartPilotInNetNS)
	log    logBuffer
	proc   *Process
}

// StartPilot starts the pilot (see PilotBinary) on two free ports of
// 127.0.0.1 and waits until /ready answers 200, i.e. the first config load is
// done. It is stopped when the test ends; its log is printed if it failed. A
// pilot that exits on its own before then fails the test.
func StartPilot(tb testing.TB, opts PilotOptions) *Pilot {
	tb.Helper()
	p := newPilot(tb, opts)
	// Ports from FreePort can be taken by someone else before the pilot binds
	// them; on that (rare) race, start again on new ones.
	for attempt := 1; ; attempt++ {
		p.pickAddresses(tb, opts)
		mark := len(p.log.String())
		err := p.launch()
		if err == nil {
			return p
		}
		if attempt < 3 && addressInUse(p.log.String()[mark:]) {
			continue
		}
		tb.Fatalf("framework: starting the pilot: %v", err)
	}
}

// StartPilots starts n pilots at the same moment, then waits until each is
// ready: for what replicas do when they start together (both creating the CA,
// say). args, if not nil, gives pilot i flags of its own after opts.Args.
func StartPilots(tb testing.TB, n int, opts PilotOptions, args func(i int) []string) []*Pilot {
	tb.Helper()
	pilots := make([]*Pilot, n)
	for i := range pilots {
		own := opts
		if args != nil {
			own.Args = append(slices.Clip(opts.Args), args(i)...)
		}
		pilots[i] = newPilot(tb, own)
		pilots[i].pickAddresses(tb, own)
		proc, err := pilots[i].start()
		if err != nil {
			tb.Fatalf("framework: starting pilot %d: %v", i, err)
		}
		pilots[i].proc = proc
	}
	for i, p := range pilots {
		if err := p.proc.WaitFor(Patience, readyCheck(p.MonitoringAddress, "/ready")); err != nil {
			tb.Fatalf("framework: pilot %d not ready: %v", i, err)
		}
	}
	return pilots
}

func newPilot(tb testing.TB, opts PilotOptions) *Pilot {
	p := &Pilot{binary: PilotBinary(tb), ConfigDir: opts.ConfigDir, dir: opts.Dir, env: opts.Env}
	if p.ConfigDir == "" && opts.Kubeconfig == "" {
		p.ConfigDir = tb.TempDir()
	}
	logOnFailure(tb, "pilot", &p.log)
	tb.Cleanup(func() { p.Stop(tb) })
	p.caDir = filepath.Join(tb.TempDir(), "ca")
	return p
}

// pickAddresses chooses free ports and sets the pilot's flags.
func (p *Pilot) pickAddresses(tb testing.TB, opts PilotOptions) {
	p.XDSAddress = FreeAddress(tb, "127.0.0.1")
	p.MonitoringAddress = FreeAddress(tb, "127.0.0.1")
	source := []string{"--config-dir", p.ConfigDir}
	if opts.Kubeconfig != "" {
		source = []string{"--kubeconfig", opts.Kubeconfig}
	}
	p.args = append(append(source,
		"--xds-address", p.XDSAddress,
		"--monitoring-address", p.MonitoringAddress,
		// The TLS port's default (:15012) is fixed, and pilots of several test packages
		// run at once; a test that wants it passes its own address in Args.
		"--xds-tls-address=",
		// The CA key stays out of the checkout; restarts keep the same root.
		"--ca-dir", p.caDir,
	), opts.Args...)
}

// start runs the pilot with p.args, in p.dir with p.env added.
func (p *Pilot) start() (*Process, error) {
	fmt.Fprintf(&p.log, "$ %s %s\n", p.binary, strings.Join(p.args, " "))
	return launch("pilot", p.binary, p.args, &p.log, func(cmd *exec.Cmd) {
		cmd.Dir = p.dir
		if len(p.env) > 0 {
			cmd.Env = append(os.Environ(), p.env...)
		}
	}, p.enter)
}

// launch runs the pilot with p.args and waits for /ready.
func (p *Pilot) launch() error {
	proc, err := p.start()
	if err != nil {
		return err
	}
	p.proc = proc
	if err := proc.WaitFor(Patience, readyCheck(p.MonitoringAddress, "/ready")); err != nil {
		proc.Stop(&p.log)
		return err
	}
	return nil
}

// Stop stops the pilot (SIGTERM, then SIGKILL after 10s), e.g. to check that
// Envoy keeps serving its last config without a control plane. A pilot that
// had already exited on its own fails the test. Stopping a stopped pilot does
// nothing.
func (p *Pilot) Stop(tb testing.TB) {
	tb.Helper()
	if p.proc == nil {
		return
	}
	if err := p.proc.UnexpectedExit(); err != nil {
		tb.Errorf("framework: %v", err)
	}
	p.proc.Stop(&p.log)
}

// Restart stops the pilot if it runs and starts it again with the same
// flags, ports and config directory, then waits for /ready. Envoys connected
// to it reconnect on their own.
func (p *Pilot) Restart(tb testing.TB) {
	tb.Helper()
	p.Stop(tb)
	fmt.Fprintf(&p.log, "[framework: restarting the pilot]\n")
	if err := p.launch(); err != nil {
		tb.Fatalf("framework: restarting the pilot: %v", err)
	}
}

// Log returns what the pilot has written to stdout and stderr so far, over
// all its runs.
func (p *Pilot) Log() string { return p.log.String() }

// Get makes a GET request to the monitoring address and returns the status
// and body; it fails the test only if no response came back.
func (p *Pilot) Get(tb testing.TB, path string) (int, []byte) {
	tb.Helper()
	status, body, err := httpGet(p.MonitoringAddress, path)
	if err != nil {
		tb.Fatalf("framework: pilot GET %s: %v", path, err)
	}
	return status, body
}

// getOK is Get requiring a 200.
func (p *Pilot) getOK(tb testing.TB, path string) []byte {
	tb.Helper()
	status, body := p.Get(tb, path)
	if status != http.StatusOK {
		tb.Fatalf("framework: pilot GET %s: status %d, want 200: %s", path, status, body)
	}
	return body
}

// Metrics returns every sample the pilot serves on /metrics.
func (p *Pilot) Metrics(tb testing.TB) []Sample {
	tb.Helper()
	samples, err := ParseMetrics(string(p.getOK(tb, "/metrics")))
	if err != nil {
		tb.Fatalf("framework: pilot /metrics: %v", err)
	}
	return samples
}

// Metric returns the sum of the samples named name whose labels include all
// of labels (nil matches every series of that name). No matching series
// counts as 0, because a labelled counter has no series before its first
// increment; use Metrics to tell the two apart.
func (p *Pilot) Metric(tb testing.TB, name string, labels map[string]string) float64 {
	tb.Helper()
	sum, _ := sumMatching(p.Metrics(tb), name, labels)
	return sum
}

// Syncz returns the raw JSON of /debug/syncz.
func (p *Pilot) Syncz(tb testing.TB) []byte {
	tb.Helper()
	return p.getOK(tb, "/debug/syncz")
}

// ConfigDump returns the raw JSON of /debug/config_dump for proxy nodeID:
// what the pilot would send that proxy.
func (p *Pilot) ConfigDump(tb testing.TB, nodeID string) []byte {
	tb.Helper()
	return p.getOK(tb, "/debug/config_dump?proxy="+url.QueryEscape(nodeID))
}

// WriteConfig writes a file into the watched config directory atomically.
func (p *Pilot) WriteConfig(tb testing.TB, name, content string) {
	tb.Helper()
	WriteFile(tb, p.ConfigDir, name, content)
}

// RemoveConfig deletes a file from the watched config directory.
func (p *Pilot) RemoveConfig(tb testing.TB, name string) {
	tb.Helper()
	RemoveFile(tb, p.ConfigDir, name)
}

// Bootstrap runs `pilot bootstrap --node nodeID --xds-address
// p.XDSAddress extra...` and returns the YAML it prints. It does not need the
// pilot to be running.
func (p *Pilot) Bootstrap(tb testing.TB, nodeID string, extra ...string) string {
	tb.Helper()
	args := append([]string{"bootstrap", "--node", nodeID, "--xds-address", p.XDSAddress}, extra...)
	cmd := exec.CommandContext(tb.Context(), p.binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("framework: `pilot %s`: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if strings.TrimSpace(stdout.String()) == "" {
		tb.Fatalf("framework: `pilot %s` printed nothing\n%s", strings.Join(args, " "), stderr.String())
	}
	return stdout.String()
}
