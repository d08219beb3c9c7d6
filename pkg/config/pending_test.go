package config

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/test/framework"
)

// A change is pending from the moment the watcher sees it until its OnChange call returns, so
// that a caller waiting for a write to be loaded does not stop at the debounce.
func TestWatcherPendingUntilOnChangeReturns(t *testing.T) {
	dir := t.TempDir()
	entered := make(chan struct{}, 10)
	release := make(chan struct{})
	ready := make(chan struct{})
	w := &Watcher{
		Dir: dir,
		OnChange: func() {
			entered <- struct{}{}
			<-release
		},
		Quiet:    10 * time.Millisecond,
		MaxDelay: 200 * time.Millisecond,
		Ready:    func() { close(ready) },
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		close(release)
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	<-ready
	if w.Pending() {
		t.Fatal("pending before any change")
	}

	writeFile(t, filepath.Join(dir, "a.yaml"), workload("a", "10.0.0.1"))
	framework.Eventually(t, func() error {
		if !w.Pending() {
			return errors.New("the write is not pending yet")
		}
		return nil
	})
	select {
	case <-entered:
	case <-time.After(framework.Patience):
		t.Fatal("OnChange not called")
	}
	if !w.Pending() {
		t.Fatal("not pending while OnChange runs")
	}
	release <- struct{}{}
	framework.Eventually(t, func() error {
		if w.Pending() {
			return errors.New("still pending after OnChange returned")
		}
		return nil
	})

	// Notify stands for a change the watch has not seen: it is pending and reloads.
	w.Notify()
	if !w.Pending() {
		t.Fatal("Notify is not pending")
	}
	select {
	case <-entered:
	case <-time.After(framework.Patience):
		t.Fatal("Notify did not lead to an OnChange call")
	}
	release <- struct{}{}
	framework.Eventually(t, func() error {
		if w.Pending() {
			return errors.New("still pending after the notified OnChange returned")
		}
		return nil
	})
}

// Stale compares the folder with what the last Load read: every write, new file and removal
// counts, and so does a file that cannot be read any more.
func TestLoaderStale(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	writeFile(t, a, workload("a", "10.0.0.1"))
	l := NewLoader(dir)
	if !l.Stale() {
		t.Error("a folder never loaded is not stale")
	}
	l.Load()
	if l.Stale() {
		t.Error("stale right after a Load")
	}
	steps := []struct {
		what   string
		change func()
	}{
		{"a file rewritten with the same size", func() { writeFile(t, a, workload("a", "10.0.0.2")) }},
		{"a file added in a subfolder", func() { writeFile(t, filepath.Join(dir, "sub", "b.yml"), workload("b", "10.0.0.3")) }},
		{"a broken file", func() { writeFile(t, a, "kind: [") }},
		{"a file removed", func() {
			if err := os.Remove(a); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, step := range steps {
		step.change()
		if !l.Stale() {
			t.Errorf("%s: not stale", step.what)
		}
		l.Load()
		if l.Stale() {
			t.Errorf("%s: stale after a Load", step.what)
		}
	}
	// Files that are not configuration do not count.
	writeFile(t, filepath.Join(dir, "notes.txt"), "notes")
	writeFile(t, filepath.Join(dir, ".hidden.yaml"), workload("h", "10.0.0.4"))
	if l.Stale() {
		t.Error("stale after writing files the Loader does not read")
	}
}
