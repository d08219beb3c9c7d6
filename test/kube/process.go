package kube

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/skiffmesh/skiff/test/framework"
)

// stopTimeout is how long a process gets to exit after SIGTERM before it is
// killed. The apiserver drains in-flight requests on SIGTERM, which is quick
// in tests; etcd exits at once.
const stopTimeout = 30 * time.Second

// logTailBytes caps how much of a log is printed: a failure shows at the end
// of a log, and megabytes of apiserver start-up chatter help nobody.
const logTailBytes = 64 << 10

// process is etcd or kube-apiserver: a framework.Process (killed if the test process dies, so
// a test binary that panics or hits `go test -timeout` leaves nothing behind) whose output is
// appended to a log file, so that one log spans an apiserver's restarts.
type process struct {
	*framework.Process
	name string
	log  *os.File
}

// startProcess runs path with args, its output appended to logPath.
func startProcess(name, path string, args []string, logPath string) (*process, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the log of %s: %w", name, err)
	}
	p, err := framework.StartProcess(name, path, args, log)
	if err != nil {
		log.Close()
		return nil, err
	}
	p.StopTimeout = stopTimeout
	go func() {
		<-p.Done() // nothing writes to the log once the process is gone
		log.Close()
	}()
	return &process{Process: p, name: name, log: log}, nil
}

// stop stops the process. Its exit status after SIGTERM is not an error (etcd and the
// apiserver may exit non-zero when asked to stop); having to kill it is.
func (p *process) stop() error {
	_ = p.Stop(p.log)
	if p.Killed() {
		return fmt.Errorf("%s still running %v after SIGTERM; killed it", p.name, stopTimeout)
	}
	return nil
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
