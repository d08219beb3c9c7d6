package framework

import (
	"os"
	"path/filepath"
	"testing"
)

// WriteFile writes content to dir/name atomically: it writes a temporary file
// in the same directory and renames it over the target, so the pilot's
// watcher sees either the old file or the whole new one, never a half
// written one. The temporary name starts with a dot and does not end in the
// target's extension, so a watcher filtering on either never loads it. name
// may contain slashes; missing directories are created.
func WriteFile(tb testing.TB, dir, name, content string) {
	tb.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		tb.Fatalf("framework: writing %s: %v", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		tb.Fatalf("framework: writing %s: %v", path, err)
	}
	_, werr := tmp.WriteString(content)
	cerr := tmp.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(tmp.Name(), 0o644) // CreateTemp makes it 0600
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), path)
	}
	if werr != nil {
		os.Remove(tmp.Name())
		tb.Fatalf("framework: writing %s: %v", path, werr)
	}
}

// RemoveFile deletes dir/name, failing the test if it does not exist, so a
// test that means to delete config notices a wrong name.
func RemoveFile(tb testing.TB, dir, name string) {
	tb.Helper()
	path := filepath.Join(dir, name)
	if err := os.Remove(path); err != nil {
		tb.Fatalf("framework: removing %s: %v", path, err)
	}
}
