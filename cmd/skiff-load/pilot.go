package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Pilot is the pilot under test: one this tool started, or one already running.
type Pilot struct {
	XDSAddress        string
	MonitoringAddress string // HOST:PORT of /ready, /metrics and /debug; may be empty for an external pilot
	PID               int    // 0 when unknown: RSS is then not reported

	cmd  *exec.Cmd
	done chan struct{} // closed when the started process has exited
	log  *bytes.Buffer // the started process's output, shown when it fails
	logM *sync.Mutex
}

// StartPilot starts binary serving configDir on free loopback ports, with the TLS port off
// and a throwaway CA, and returns once GET /ready answers 200. The process is killed when ctx
// ends; call Stop to end it earlier.
func StartPilot(ctx context.Context, binary, configDir, logFile string, extraArgs ...string) (*Pilot, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	caDir, err := os.MkdirTemp("", "skiff-load-ca-")
	if err != nil {
		return nil, fmt.Errorf("starting pilot: CA folder: %w", err)
	}
	p := &Pilot{
		XDSAddress:        net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
		MonitoringAddress: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1])),
		done:              make(chan struct{}),
		log:               &bytes.Buffer{},
		logM:              &sync.Mutex{},
	}
	// Not CommandContext: Stop sends SIGTERM first so pilot can log its shutdown.
	p.cmd = exec.Command(binary,
		"--config-dir", configDir,
		"--xds-address", p.XDSAddress,
		"--xds-tls-address", "",
		"--monitoring-address", p.MonitoringAddress,
		"--ca-dir", caDir,
		"--log-level", "warn", // one info line per connecting proxy would dominate the run
	)
	p.cmd.Args = append(p.cmd.Args, extraArgs...)
	var out io.Writer = &lockedWriter{w: p.log, mu: p.logM}
	var logF *os.File
	if logFile != "" {
		if logF, err = os.Create(logFile); err != nil {
			_ = os.RemoveAll(caDir)
			return nil, fmt.Errorf("starting pilot: log file: %w", err)
		}
		out = io.MultiWriter(out, logF)
	}
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if err := p.cmd.Start(); err != nil {
		_ = os.RemoveAll(caDir)
		if logF != nil {
			_ = logF.Close()
		}
		return nil, fmt.Errorf("starting pilot %s: %w", binary, err)
	}
	p.PID = p.cmd.Process.Pid
	go func() {
		_ = p.cmd.Wait()
		_ = os.RemoveAll(caDir)
		if logF != nil {
			_ = logF.Close()
		}
		close(p.done)
	}()
	go func() {
		select {
		case <-ctx.Done():
			p.Stop()
		case <-p.done:
		}
	}()
	slog.Info("started pilot", "pid", p.PID, "xds", p.XDSAddress, "monitoring", p.MonitoringAddress)
	if err := p.waitReady(ctx); err != nil {
		p.Stop()
		return nil, fmt.Errorf("%w\npilot output:\n%s", err, p.Output())
	}
	return p, nil
}

// ExternalPilot is a pilot someone else started.
func ExternalPilot(ctx context.Context, xdsAddress, monitoringAddress string, pid int) (*Pilot, error) {
	p := &Pilot{XDSAddress: xdsAddress, MonitoringAddress: monitoringAddress, PID: pid}
	if monitoringAddress != "" {
		if err := p.waitReady(ctx); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// waitReady polls /ready: pilot answers 200 once its first configuration load is done.
func (p *Pilot) waitReady(ctx context.Context) error {
	url := "http://" + p.MonitoringAddress + "/ready"
	var last string
	for {
		if p.exited() {
			return fmt.Errorf("pilot exited before it was ready")
		}
		resp, err := httpGet(ctx, url)
		if err == nil && resp.status == http.StatusOK {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("%d %s", resp.status, strings.TrimSpace(string(resp.body)))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %s)", url, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (p *Pilot) exited() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop ends a pilot this tool started: SIGTERM, then SIGKILL after 5s. It does nothing to an
// external pilot.
func (p *Pilot) Stop() {
	if p.cmd == nil || p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Output is what the started pilot has printed so far.
func (p *Pilot) Output() string {
	if p.log == nil {
		return ""
	}
	p.logM.Lock()
	defer p.logM.Unlock()
	return p.log.String()
}

// RSS is the pilot process's resident set size in bytes, from /proc/PID/status (VmRSS), or 0
// when the PID is unknown or the process is gone.
func (p *Pilot) RSS() int64 {
	if p.PID == 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest) // "123456 kB"
			if len(f) == 2 && f[1] == "kB" {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// Metrics sums pilot's Prometheus counters by metric name and type label, e.g.
// "pilot_total_xds_rejects" → {"rds": 3}. It parses the text format by hand because only a
// few plain counters are read.
func (p *Pilot) Metrics(ctx context.Context, names ...string) (map[string]map[string]float64, error) {
	return p.MetricsBy(ctx, "type", names...)
}

// MetricsBy is Metrics summed by another label, e.g. "reason".
func (p *Pilot) MetricsBy(ctx context.Context, label string, names ...string) (map[string]map[string]float64, error) {
	if p.MonitoringAddress == "" {
		return nil, errors.New("no monitoring address")
	}
	resp, err := httpGet(ctx, "http://"+p.MonitoringAddress+"/metrics")
	if err != nil {
		return nil, fmt.Errorf("reading pilot metrics: %w", err)
	}
	out := map[string]map[string]float64{}
	for _, n := range names {
		out[n] = map[string]float64{}
	}
	sc := bufio.NewScanner(bytes.NewReader(resp.body))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		// NAME{LABELS} VALUE, or NAME VALUE for a metric without labels.
		name, labels, value := "", "", ""
		if n, rest, ok := strings.Cut(line, "{"); ok {
			name = n
			if labels, value, ok = strings.Cut(rest, "} "); !ok {
				continue
			}
		} else if name, value, ok = strings.Cut(line, " "); !ok {
			continue
		}
		byType, ok := out[name]
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		typ := ""
		for l := range strings.SplitSeq(labels, ",") {
			if k, val, ok := strings.Cut(l, "="); ok && k == label {
				typ = strings.Trim(val, `"`)
			}
		}
		byType[typ] += v
	}
	return out, sc.Err()
}

// Sharing is how many distinct proxy classes, and distinct configurations, the connected
// proxies have, from /debug/syncz. Classes are pilot's per-workload keys; a configuration
// (the "config" field, where pilot reports it) is one translation that classes with the same
// inputs share. configs is -1 when pilot does not report them.
func (p *Pilot) Sharing(ctx context.Context) (classes, configs int, err error) {
	if p.MonitoringAddress == "" {
		return 0, 0, errors.New("no monitoring address")
	}
	resp, err := httpGet(ctx, "http://"+p.MonitoringAddress+"/debug/syncz")
	if err != nil {
		return 0, 0, fmt.Errorf("reading pilot /debug/syncz: %w", err)
	}
	if resp.status != http.StatusOK {
		return 0, 0, fmt.Errorf("reading pilot /debug/syncz: %d", resp.status)
	}
	var statuses []struct {
		Class  string `json:"class"`
		Config string `json:"config"`
	}
	if err := json.Unmarshal(resp.body, &statuses); err != nil {
		return 0, 0, fmt.Errorf("decoding pilot /debug/syncz: %w", err)
	}
	classSet, configSet := map[string]bool{}, map[string]bool{}
	for _, s := range statuses {
		classSet[s.Class] = true
		if s.Config != "" {
			configSet[s.Config] = true
		}
	}
	configs = len(configSet)
	if configs == 0 {
		configs = -1
	}
	return len(classSet), configs, nil
}

type httpResponse struct {
	status int
	body   []byte
}

// httpGet is a GET with a per-call bound, so a wedged pilot cannot hang the run.
func httpGet(ctx context.Context, url string) (*httpResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &httpResponse{status: resp.StatusCode, body: body}, nil
}

// freePorts asks the kernel for n free loopback ports. They are closed again before pilot
// binds them, a small race that is acceptable for a load tool (and for tests: nothing else
// here picks ports the same instant).
func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("picking a free port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
