package kube

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// stopTimeout is how long a process gets to exit after SIGTERM before it is
// killed. The apiserver drains in-flight requests on SIGTERM, which is quick
// in tests; etcd exits at once.
const stopTimeout = 30 * time.Second

// logTailBytes caps how much of a log is printed: a failure shows at the end
// of a log, and megabytes of apiserver start-up chatter help nobody.
const logTailBytes = 64 << 10

// process is one run of a binary, its output going to a log file.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	err  error         // from Wait; read only after done is closed
}

// startProcess runs path with args, stdout and stderr appended to logPath
// (after the command line, so a log says what was run). Appending keeps one
// log across an apiserver's restarts.
//
// The process gets SIGKILL if the test process dies (Pdeathsig on Linux), so
// a test binary that panics or hits `go test -timeout` leaves no etcd or
// apiserver behind. Linux sends that signal when the *thread* that started
// the child exits, so the start happens on a goroutine locked to its thread
// until the child has exited.
func startProcess(name, path string, args []string, logPath string) (*process, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the log of %s: %w", name, err)
	}
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
		defer log.Close()
		if err := p.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = p.cmd.Wait()
		fmt.Fprintf(log, "[kube: %s exited: %v]\n", name, exitDescription(p.err))
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

// stop sends SIGTERM, waits up to stopTimeout, then kills. It is idempotent.
// The exit status of a process that was asked to stop is not an error (etcd
// and the apiserver may exit non-zero on SIGTERM); only having to kill it is
// reported.
func (p *process) stop() error {
	if gone, _ := p.exited(); gone {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("sending SIGTERM to %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s still running %v after SIGTERM; killed it", p.name, stopTimeout)
	}
}

// waitFor polls check until it returns nil, the timeout passes, or the
// process exits; the error says which, with check's last error.
func (p *process) waitFor(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if gone, exitErr := p.exited(); gone {
			return fmt.Errorf("%s exited (%s) while waiting for it: last check: %v", p.name, exitDescription(exitErr), err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: last check: %v", p.name, timeout, err)
		}
		select {
		case <-p.done:
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// logTail returns the end of the log file at path, at most logTailBytes.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("[no log: %v]\n", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("[no log: %v]\n", err)
	}
	prefix := ""
	if size := info.Size(); size > logTailBytes {
		if _, err := f.Seek(size-logTailBytes, io.SeekStart); err != nil {
			return fmt.Sprintf("[reading log: %v]\n", err)
		}
		prefix = fmt.Sprintf("[... %d bytes cut ...]\n", size-logTailBytes)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("[reading log: %v]\n", err)
	}
	return prefix + string(b)
}
