package framework

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// stopTimeout is how long a process gets to exit after SIGTERM before it is
// killed. Envoy and the pilot both exit well within it; reaching it is itself
// worth a look, so it is logged.
const stopTimeout = 10 * time.Second

// maxLogPrint caps how much of a log is printed on failure: the end of a log
// is where the failure is, and a test log of many megabytes helps nobody.
const maxLogPrint = 1 << 20

// logBuffer collects a process's stdout and stderr. It outlives the process
// so that a restarted pilot keeps one log across its runs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tail returns at most maxLogPrint bytes from the end of the log.
func (b *logBuffer) tail() string {
	s := b.String()
	if len(s) <= maxLogPrint {
		return s
	}
	return fmt.Sprintf("[... %d bytes cut ...]\n%s", len(s)-maxLogPrint, s[len(s)-maxLogPrint:])
}

// logOnFailure registers a cleanup that prints log when the test failed (or
// always, with SKIFF_TEST_LOGS set). Callers register it before the cleanup
// that stops the process: cleanups run last-in first-out, so the log is
// printed after the stop, complete, and after whatever the stop checked.
func logOnFailure(tb testing.TB, name string, log *logBuffer) {
	tb.Cleanup(func() {
		if tb.Failed() || os.Getenv("SKIFF_TEST_LOGS") != "" {
			tb.Logf("---- %s log ----\n%s---- end of %s log ----", name, log.tail(), name)
		}
	})
}

// process is one run of a binary.
type process struct {
	name     string
	cmd      *exec.Cmd
	done     chan struct{} // closed once the process has exited
	err      error         // from Wait; read only after done is closed
	stopping atomic.Bool   // set by stop: exiting is then expected
}

// startProcess runs path with args, stdout and stderr going to log. The
// command line is written to the log first, so a failure's log says what was
// run.
//
// The process gets SIGKILL if the test process dies (Linux Pdeathsig), so a
// test binary killed by `go test -timeout` leaves no Envoy behind holding
// ports. Linux sends that signal when the *thread* that started the child
// exits, so the start happens on a goroutine locked to its thread until the
// child has exited.
func startProcess(name, path string, args []string, log *logBuffer) (*process, error) {
	fmt.Fprintf(log, "$ %s %s\n", path, strings.Join(args, " "))
	p := &process{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout = log
	p.cmd.Stderr = log
	p.cmd.SysProcAttr = sysProcAttr()
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := p.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = p.cmd.Wait()
		fmt.Fprintf(log, "[framework: %s exited: %v]\n", name, exitDescription(p.err))
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("starting %s (%s): %w", name, path, err)
	}
	return p, nil
}

func exitDescription(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// exited reports whether the process has exited, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// unexpectedExit returns an error if the process exited without being asked
// to: a crash, or a fatal configuration error.
func (p *process) unexpectedExit() error {
	if gone, err := p.exited(); gone && !p.stopping.Load() {
		return fmt.Errorf("%s exited unexpectedly: %s", p.name, exitDescription(err))
	}
	return nil
}

// stop sends SIGTERM, waits up to stopTimeout, then kills. It is idempotent
// and returns how the process ended.
func (p *process) stop(log *logBuffer) error {
	p.stopping.Store(true)
	if gone, err := p.exited(); gone {
		return err
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		fmt.Fprintf(log, "[framework: SIGTERM to %s: %v]\n", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		fmt.Fprintf(log, "[framework: %s still running %v after SIGTERM; killing it]\n", p.name, stopTimeout)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return p.err
}

// waitFor polls check every pollInterval until it returns nil, the timeout
// passes, or the process exits; the error says which, with check's last error.
func (p *process) waitFor(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if gone, exitErr := p.exited(); gone {
			return fmt.Errorf("%s exited (%s) while waiting: last check: %v", p.name, exitDescription(exitErr), err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: last check: %v", p.name, timeout, err)
		}
		select {
		case <-p.done:
		case <-time.After(pollInterval):
		}
	}
}

// addressInUse reports whether a failed start looks like a lost race for a
// port picked by FreePort, in which case starting again on new ports is right.
func addressInUse(log string) bool {
	return strings.Contains(log, "address already in use") || strings.Contains(log, "Address already in use")
}
