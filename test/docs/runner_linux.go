package docs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/test/framework"
)

// Session runs the blocks of one document and owns every process they start: each block is a
// bash of its own in a process group of its own, and every group is stopped when the test
// ends, background or not (a block may leave jobs behind with `&`, as a reader's terminal
// keeps them).
type Session struct {
	t    *testing.T
	root string // the repository, where blocks run
	logs string // a folder for the blocks' output
	// deadline ends every wait early enough for the cleanups to stop what runs before go
	// test's -timeout kills the test process (and with it only its direct children).
	deadline time.Time

	shells     []*shell          // in start order
	background map[string]*shell // by NAME, while running
}

// shell is one block being run by bash.
type shell struct {
	block *Block
	cmd   *exec.Cmd
	out   string        // file with its stdout and stderr
	done  chan struct{} // closed when bash has exited
	err   error         // bash's exit, once done is closed
}

// stopGrace is how long a stopped block's processes get to exit after SIGTERM.
const stopGrace = 10 * time.Second

// NewSession prepares to run blocks from root; everything it starts is stopped when t ends,
// and every block's output is printed if t failed.
func NewSession(t *testing.T, root string) *Session {
	s := &Session{t: t, root: root, logs: t.TempDir(), background: map[string]*shell{}}
	s.deadline = time.Now().Add(24 * time.Hour)
	if d, ok := t.Deadline(); ok {
		s.deadline = d.Add(-2 * time.Minute)
	}
	t.Cleanup(s.printOnFailure)
	t.Cleanup(s.stopAll)
	return s
}

// bound is how long a wait may last: framework.Patience, less if the test's deadline is near.
func (s *Session) bound() time.Duration {
	return max(0, min(framework.Patience, time.Until(s.deadline)))
}

// Run runs blocks in order, as a reader pastes them, and fails the test at the first block
// that does not do what its directives say.
func (s *Session) Run(blocks []*Block) {
	s.t.Helper()
	for _, b := range blocks {
		if b.Skip != "" {
			s.t.Logf("%s: skipped: %s", b.Where(), b.Skip)
			continue
		}
		for _, name := range b.Stop {
			sh, ok := s.background[name]
			if !ok {
				s.t.Fatalf("%s: stop %s: no background block of that name is running", b.Where(), name)
			}
			s.stop(sh)
			delete(s.background, name)
		}
		sh := s.start(b)
		if b.Background != "" {
			if _, dup := s.background[b.Background]; dup {
				s.t.Fatalf("%s: background %s is already running", b.Where(), b.Background)
			}
			s.background[b.Background] = sh
		} else {
			s.finish(sh)
		}
		for _, r := range b.Ready {
			if err := s.waitReady(sh, r); err != nil {
				s.t.Fatalf("%s: %v\n%s", b.Where(), err, describe(sh))
			}
		}
	}
}

// start runs a block with bash in a process group of its own.
func (s *Session) start(b *Block) *shell {
	s.t.Helper()
	sh := &shell{block: b, done: make(chan struct{}),
		out: filepath.Join(s.logs, fmt.Sprintf("%s-%d.log", filepath.Base(b.File), b.Line))}
	out, err := os.Create(sh.out)
	if err != nil {
		s.t.Fatal(err)
	}
	defer out.Close()
	sh.cmd = exec.Command("bash", "-c", b.Script)
	sh.cmd.Dir = s.root
	// A file, not a pipe: jobs a block leaves running keep a pipe open, and waiting for bash
	// would wait for them too.
	sh.cmd.Stdout, sh.cmd.Stderr = out, out
	sh.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := sh.cmd.Start(); err != nil {
		s.t.Fatalf("%s: starting bash: %v", b.Where(), err)
	}
	s.shells = append(s.shells, sh)
	go func() {
		sh.err = sh.cmd.Wait()
		close(sh.done)
	}()
	return sh
}

// finish waits for a foreground block to end and checks its output.
func (s *Session) finish(sh *shell) {
	s.t.Helper()
	b := sh.block
	select {
	case <-sh.done:
	case <-time.After(s.bound()):
		s.stop(sh)
		s.t.Fatalf("%s: still running after %v\n%s", b.Where(), s.bound(), describe(sh))
	}
	output := sh.output()
	var missing []string
	for _, want := range b.Expect {
		if !strings.Contains(output, want) {
			missing = append(missing, strconv.Quote(want))
		}
	}
	if len(missing) > 0 {
		s.t.Fatalf("%s: the output lacks %s\n%s", b.Where(), strings.Join(missing, ", "), describe(sh))
	}
}

// waitReady polls r until it answers as it must. A background block that ends meanwhile
// fails the wait at once: a server that could not start (a port taken, say) says why in its
// output.
func (s *Session) waitReady(sh *shell, r Readiness) error {
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(s.bound())
	var last error
	for {
		last = checkReady(client, r)
		if last == nil {
			return nil
		}
		if sh.block.Background != "" {
			select {
			case <-sh.done:
				return fmt.Errorf("background %s exited (%v) before %s answered: %v", sh.block.Background, sh.err, r.URL, last)
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %v", r.URL, s.bound(), last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func checkReady(client *http.Client, r Readiness) error {
	resp, err := client.Get(r.URL)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading %s: %w", r.URL, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("status %d: %.200s", resp.StatusCode, body)
	}
	if !strings.Contains(string(body), r.Contains) {
		return fmt.Errorf("answer lacks %q: %.500s", r.Contains, body)
	}
	return nil
}

// stop ends a block's process group: SIGTERM, as Ctrl-C in its terminal would, and SIGKILL
// for what is still there after stopGrace.
func (s *Session) stop(sh *shell) {
	pgid := sh.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	deadline := time.Now().Add(stopGrace)
	for groupAlive(pgid) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if groupAlive(pgid) {
		s.t.Logf("%s: still running %v after SIGTERM; killing it", sh.block.Where(), stopGrace)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	<-sh.done
}

// stopAll stops every block's processes, the last started first.
func (s *Session) stopAll() {
	for i := len(s.shells) - 1; i >= 0; i-- {
		s.stop(s.shells[i])
	}
}

func (s *Session) printOnFailure() {
	if !s.t.Failed() && os.Getenv("SKIFF_TEST_LOGS") == "" {
		return
	}
	for _, sh := range s.shells {
		s.t.Log(describe(sh))
	}
}

// groupAlive reports whether a process of group pgid is still running. Exited processes
// whose parent has not reaped them yet (zombies) do not count.
func groupAlive(pgid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return syscall.Kill(-pgid, 0) == nil
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) >= 3 && fields[0] != "Z" && fields[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
}

// output is what the block has printed so far.
func (sh *shell) output() string {
	data, err := os.ReadFile(sh.out)
	if err != nil {
		return fmt.Sprintf("[reading the output: %v]", err)
	}
	return string(data)
}

// maxOutput caps how much of a block's output a failure prints: its end.
const maxOutput = 64 << 10

// describe shows a block as a terminal would: the commands, then what they printed.
func describe(sh *shell) string {
	kind := "block"
	if sh.block.Background != "" {
		kind = "background " + sh.block.Background
	}
	out := sh.output()
	if len(out) > maxOutput {
		out = fmt.Sprintf("[... %d bytes cut ...]\n%s", len(out)-maxOutput, out[len(out)-maxOutput:])
	}
	return fmt.Sprintf("---- %s, %s ----\n%s---- its output ----\n%s---- end of %s ----",
		kind, sh.block.Where(), sh.block.Script, out, sh.block.Where())
}

// RequirePortsFree fails the test at once, naming them, if any of ports is taken: the docs use
// fixed ports, and a tour already running on the machine (or its leftovers) would answer in
// place of the one under test.
func RequirePortsFree(t *testing.T, ports ...int) {
	t.Helper()
	var taken []string
	for _, port := range ports {
		l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			taken = append(taken, fmt.Sprintf("%d (%v)", port, errors.Unwrap(err)))
			continue
		}
		l.Close()
	}
	if len(taken) > 0 {
		t.Fatalf("the docs use fixed ports, and these are taken: %s; stop what holds them (`ss -ltnp` names it) and run again",
			strings.Join(taken, ", "))
	}
}

// Prepare runs a command from root before the docs do, to warm caches (the Go build cache) so
// that the docs' own first builds fit in their waits. It is bounded only by the test's
// deadline: a cold build on a busy machine takes minutes.
func Prepare(t *testing.T, root string, name string, args ...string) {
	t.Helper()
	ctx := context.Background()
	if d, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-2*time.Minute))
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("preparing: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
