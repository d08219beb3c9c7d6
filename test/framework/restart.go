package framework

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
)

// Kill ends the pilot with SIGKILL, as a crash, an OOM kill or a lost node would: no
// graceful shutdown, no stream closed politely, nothing flushed. It returns once the process
// has exited. Restart then starts it again in place: the same flags, ports, config folder and
// --ca-dir. Killing a pilot that is not running fails the test.
func (p *Pilot) Kill(tb testing.TB) {
	tb.Helper()
	if p.proc == nil {
		tb.Fatalf("framework: killing the pilot: it was never started")
	}
	if err := p.proc.UnexpectedExit(); err != nil {
		tb.Fatalf("framework: killing the pilot: %v", err)
	}
	if err := p.proc.kill(); err != nil {
		tb.Fatalf("framework: killing the pilot: %v", err)
	}
	fmt.Fprintf(&p.log, "[framework: pilot killed with SIGKILL]\n")
}

// kill sends SIGKILL and waits for the exit; the exit is then expected, so Stop and the
// test's cleanup do not report it.
func (p *Process) kill() error {
	p.stopping.Store(true)
	if gone, _ := p.Exited(); gone {
		return fmt.Errorf("%s had already exited", p.name)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGKILL to %s: %w", p.name, err)
	}
	<-p.done
	return nil
}
