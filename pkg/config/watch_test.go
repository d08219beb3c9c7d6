package config

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/test/framework"
)

// startWatcher runs a Watcher on dir with short debounce durations, returning once its
// folders are watched, and a channel that receives a value for each OnChange call.
func startWatcher(t *testing.T, dir string) <-chan struct{} {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	changes := make(chan struct{}, 100)
	ready := make(chan struct{})
	w := &Watcher{
		Dir:      dir,
		OnChange: func() { changes <- struct{}{} },
		Quiet:    10 * time.Millisecond,
		MaxDelay: 200 * time.Millisecond,
		Ready:    func() { close(ready) },
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("Run: %v", err)
	case <-time.After(framework.Patience):
		t.Fatal("watcher not ready")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(framework.Patience):
			t.Error("Run did not return after cancel")
		}
	})
	return changes
}

// waitChange waits for an OnChange call, then for any stragglers of the same burst to pass.
func waitChange(t *testing.T, changes <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-changes:
	case <-time.After(framework.Patience):
		t.Fatalf("no change reported: %s", what)
	}
	drain(changes, 50*time.Millisecond)
}

func drain(changes <-chan struct{}, quiet time.Duration) {
	for {
		select {
		case <-changes:
		case <-time.After(quiet):
			return
		}
	}
}

func TestWatchNewFile(t *testing.T) {
	dir := t.TempDir()
	changes := startWatcher(t, dir)
	writeFile(t, filepath.Join(dir, "a.yaml"), workload("a", "10.0.0.1"))
	waitChange(t, changes, "new file")

	// An editor that saves by writing a temporary file and renaming it over the original.
	tmp := filepath.Join(dir, ".a.yaml.tmp")
	writeFile(t, tmp, workload("a", "10.0.0.2"))
	if err := os.Rename(tmp, filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	waitChange(t, changes, "file replaced by rename")

	if err := os.Remove(filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	waitChange(t, changes, "file removed")
}

func TestWatchSubfolders(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "old", "a.yaml"), workload("a", "10.0.0.1"))
	changes := startWatcher(t, dir)

	writeFile(t, filepath.Join(dir, "old", "a.yaml"), workload("a", "10.0.0.2"))
	waitChange(t, changes, "file in existing subfolder")

	// A new folder is watched too: first its creation is reported, then files written in it.
	sub := filepath.Join(dir, "new", "deeper")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	waitChange(t, changes, "new folder")
	writeFile(t, filepath.Join(sub, "b.yaml"), workload("b", "10.0.0.3"))
	waitChange(t, changes, "file in new subfolder")

	// Moving a folder out of the tree removes its files from the configuration.
	if err := os.Rename(filepath.Join(dir, "old"), filepath.Join(t.TempDir(), "moved")); err != nil {
		t.Fatal(err)
	}
	waitChange(t, changes, "folder moved away")
}

func TestWatchIgnoresHiddenFiles(t *testing.T) {
	dir := t.TempDir()
	changes := startWatcher(t, dir)
	writeFile(t, filepath.Join(dir, ".a.yaml.swp"), "swap")
	writeFile(t, filepath.Join(dir, "notes.txt"), "notes")
	select {
	case <-changes:
		t.Fatal("change reported for files that are not configuration")
	case <-time.After(100 * time.Millisecond):
	}
}

func TestWatchRootRemoved(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "config")
	writeFile(t, filepath.Join(dir, "a.yaml"), workload("a", "10.0.0.1"))
	changes := startWatcher(t, dir)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	// Reported, so that the Loader can say the folder is gone; Run keeps going until
	// cancelled, which the cleanup checks.
	waitChange(t, changes, "folder removed")
}

func TestWatchMissingFolder(t *testing.T) {
	err := Watch(context.Background(), filepath.Join(t.TempDir(), "missing"), func() {})
	if err == nil {
		t.Fatal("no error for a missing folder")
	}
}
