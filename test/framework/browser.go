package framework

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// ChromiumPath is Debian's Chromium, which `make chromium` installs.
const ChromiumPath = "/usr/bin/chromium"

// chromiumFlags keep a headless Chromium off the network it is not given: no sandbox (tests
// run as root), no GPU, and none of the background fetches (updates, sync, field trials,
// QUIC probes) a new profile starts with.
var chromiumFlags = []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"}

// Chromium renders pages in headless Chromium, each in a new process with a new empty
// profile, so no state leaks from one rendering to the next.
type Chromium struct {
	tb      testing.TB
	bin     string
	Version string
}

// StartChromium finds Chromium; a missing one fails the test (never skips it) with the make
// target that installs it.
func StartChromium(tb testing.TB) *Chromium {
	tb.Helper()
	if err := checkExecutable(ChromiumPath); err != nil {
		tb.Fatalf("framework: no Chromium at %s: %v; run `make chromium` (apt-get install chromium)", ChromiumPath, err)
	}
	// Output, not CombinedOutput: Debian's launcher script complains on stderr on machines
	// with much memory.
	out, err := exec.Command(ChromiumPath, "--version").Output()
	if err != nil {
		tb.Fatalf("framework: %s --version: %v", ChromiumPath, err)
	}
	return &Chromium{tb: tb, bin: ChromiumPath, Version: string(bytes.TrimSpace(out))}
}

// RenderOptions configure one rendering.
type RenderOptions struct {
	// VirtualTime is how long the page's clock runs (its timers and fetches) before the
	// page is captured; Chromium advances it as fast as the page lets it. Default 3 s.
	VirtualTime time.Duration
	// WindowSize is the viewport, "WIDTH,HEIGHT"; default 1400,900.
	WindowSize string
}

// RenderDOM loads pageURL (on loopback) and returns its DOM, serialised after the page's
// scripts ran for opts.VirtualTime (--dump-dom): what a person would see, as HTML.
func (c *Chromium) RenderDOM(pageURL string, opts RenderOptions) (string, error) {
	out, err := c.run(pageURL, opts, "--dump-dom")
	return string(out), err
}

// Screenshot loads pageURL as RenderDOM does and writes a PNG of the viewport to path.
func (c *Chromium) Screenshot(pageURL, path string, opts RenderOptions) error {
	_, err := c.run(pageURL, opts, "--screenshot="+path)
	if err != nil {
		return err
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("chromium wrote no screenshot: %w", err)
	}
	return nil
}

func (c *Chromium) run(pageURL string, opts RenderOptions, mode string) ([]byte, error) {
	u, err := url.Parse(pageURL)
	if err != nil {
		return nil, fmt.Errorf("page URL %q: %w", pageURL, err)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("page URL %q: Chromium in tests loads loopback addresses only", pageURL)
	}
	budget := opts.VirtualTime
	if budget == 0 {
		budget = 3 * time.Second
	}
	size := opts.WindowSize
	if size == "" {
		size = "1400,900"
	}
	profile, err := os.MkdirTemp(c.tb.TempDir(), "chromium-profile-")
	if err != nil {
		return nil, fmt.Errorf("chromium profile: %w", err)
	}
	defer os.RemoveAll(profile)
	args := append(append([]string{}, chromiumFlags...),
		"--user-data-dir="+profile, "--window-size="+size,
		"--virtual-time-budget="+strconv.FormatInt(budget.Milliseconds(), 10),
		// Crash reports and the disk cache stay in the profile, not in $HOME.
		"--disk-cache-dir="+filepath.Join(profile, "cache"), "--crash-dumps-dir="+filepath.Join(profile, "crashes"),
		mode, pageURL)
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	// Chromium starts helper processes (zygote, renderer, network service): one process
	// group, so a timeout kills them all, and each dies with the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.Env = append(os.Environ(), "HOME="+profile)
	cmd.Dir = profile
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("chromium %s %s: %w\n%s", mode, pageURL, err, tailOf(stderr.String(), 4096))
	}
	return stdout.Bytes(), nil
}

func tailOf(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "[...]" + s[len(s)-n:]
}
