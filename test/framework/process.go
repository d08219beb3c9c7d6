package framework

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
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

// Process is one run of a binary, a child of the test process that dies with it.
type Process struct {
	name     string
	cmd      *exec.Cmd
	done     chan struct{} // closed once the process has exited
	err      error         // from Wait; read only after done is closed
	stopping atomic.Bool   // set by stop: exiting is then expected
	killed   atomic.Bool   // set by stop when SIGTERM was not enough
	// StopTimeout is how long Stop waits after SIGTERM before it kills; default 10 s.
	StopTimeout time.Duration
}

// StartProcess runs path with args, stdout and stderr going to out. The
// command line is written to out first, so a failure's log says what was run.
//
// The process gets SIGKILL if the test process dies (Linux Pdeathsig), so a
// test binary killed by `go test -timeout` leaves no Envoy behind holding
// ports. Linux sends that signal when the *thread* that started the child
// exits, so the start happens on a goroutine locked to its thread until the
// child has exited.
func StartProcess(name, path string, args []string, out io.Writer) (*Process, error) {
	fmt.Fprintf(out, "$ %s %s\n", path, strings.Join(args, " "))
	return launch(name, path, args, out, nil, nil)
}

// launch starts the process from a goroutine locked to its OS thread until the child exits
// (so that Pdeathsig holds). prepare, if not nil, adjusts the command first (credentials, say);
// enter, if not nil, runs on that thread before the start (entering a network namespace, which
// the child inherits), and the thread is then never unlocked, so the runtime discards it.
func launch(name, path string, args []string, log io.Writer, prepare func(*exec.Cmd), enter func() error) (*Process, error) {
	p := &Process{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout = log
	p.cmd.Stderr = log
	p.cmd.SysProcAttr = sysProcAttr()
	if prepare != nil {
		prepare(p.cmd)
	}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if enter == nil {
			defer runtime.UnlockOSThread()
		} else if err := enter(); err != nil {
			started <- err
			return
		}
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

// Exited reports whether the process has exited, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// UnexpectedExit returns an error if the process exited without being asked
// to: a crash, or a fatal configuration error.
func (p *Process) UnexpectedExit() error {
	if gone, err := p.Exited(); gone && !p.stopping.Load() {
		return fmt.Errorf("%s exited unexpectedly: %s", p.name, exitDescription(err))
	}
	return nil
}

// Stop sends SIGTERM, waits up to stopTimeout, then kills, noting that in log.
// It is idempotent and returns how the process ended.
func (p *Process) Stop(log io.Writer) error {
	p.stopping.Store(true)
	if gone, err := p.Exited(); gone {
		return err
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		fmt.Fprintf(log, "[framework: SIGTERM to %s: %v]\n", p.name, err)
	}
	timeout := cmp.Or(p.StopTimeout, stopTimeout)
	select {
	case <-p.done:
	case <-time.After(timeout):
		fmt.Fprintf(log, "[framework: %s still running %v after SIGTERM; killing it]\n", p.name, timeout)
		p.killed.Store(true)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return p.err
}

// Killed reports whether Stop had to kill the process.
func (p *Process) Killed() bool { return p.killed.Load() }

// WaitFor polls check every pollInterval until it returns nil, the timeout
// passes, or the process exits; the error says which, with check's last error.
func (p *Process) WaitFor(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if gone, exitErr := p.Exited(); gone {
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

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// addressInUse reports whether a failed start looks like a lost race for a
// port picked by FreePort, in which case starting again on new ports is right.
func addressInUse(log string) bool {
	return strings.Contains(log, "address already in use") || strings.Contains(log, "Address already in use")
}
