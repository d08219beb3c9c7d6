package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// workload is a one-object file: a WorkloadEntry with the given name and address.
func workload(name, address string) string {
	return "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: " + name + "}\nspec: {address: " + address + "}\n"
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// addresses lists "name=address" for every WorkloadEntry of a set.
func addresses(s *Set) string {
	var out []string
	for _, we := range s.WorkloadEntries {
		out = append(out, we.Name+"="+we.Spec.Address)
	}
	return strings.Join(out, ",")
}

func errorFiles(errs []*Error) []string {
	var out []string
	for _, e := range errs {
		out = append(out, e.File)
	}
	return out
}

func TestLoaderLastGood(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	l := NewLoader(dir)

	writeFile(t, a, workload("a", "10.0.0.1"))
	set, errs := l.Load()
	if len(errs) > 0 || addresses(set) != "a=10.0.0.1" {
		t.Fatalf("good file: %s %v", addresses(set), errs)
	}

	// Break a: the old contents stay, with the error.
	writeFile(t, a, workload("a", "10.0.0.2")+"---\n"+workload("a2", "not an address"))
	set, errs = l.Load()
	if addresses(set) != "a=10.0.0.1" || len(errs) != 1 || errs[0].File != a || errs[0].Doc != 1 || errs[0].Field != "spec.address" {
		t.Fatalf("broken file: %s %v", addresses(set), errs)
	}

	// While a is broken, b's changes still apply.
	writeFile(t, b, workload("b", "10.0.1.1"))
	set, errs = l.Load()
	if addresses(set) != "a=10.0.0.1,b=10.0.1.1" || len(errs) != 1 {
		t.Fatalf("other file while one is broken: %s %v", addresses(set), errs)
	}
	writeFile(t, b, workload("b", "10.0.1.2"))
	set, _ = l.Load()
	if addresses(set) != "a=10.0.0.1,b=10.0.1.2" {
		t.Fatalf("other file edited while one is broken: %s", addresses(set))
	}

	// Fix a: the new contents apply.
	writeFile(t, a, workload("a", "10.0.0.3")+"---\n"+workload("a2", "10.0.0.4"))
	set, errs = l.Load()
	if addresses(set) != "a=10.0.0.3,a2=10.0.0.4,b=10.0.1.2" || len(errs) != 0 {
		t.Fatalf("fixed file: %s %v", addresses(set), errs)
	}

	// Delete a: its objects go.
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	set, errs = l.Load()
	if addresses(set) != "b=10.0.1.2" || len(errs) != 0 {
		t.Fatalf("deleted file: %s %v", addresses(set), errs)
	}

	// A file that was never good contributes nothing, and is recreated from scratch: the
	// last good contents of a deleted file are forgotten.
	writeFile(t, a, "kind: [")
	set, errs = l.Load()
	if addresses(set) != "b=10.0.1.2" || len(errs) != 1 || errs[0].File != a {
		t.Fatalf("new broken file: %s %v", addresses(set), errs)
	}
}

func TestLoaderDuplicatesAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	l := NewLoader(dir)
	writeFile(t, a, workload("x", "10.0.0.1"))
	writeFile(t, b, workload("w", "10.0.0.2"))
	if set, errs := l.Load(); len(errs) > 0 || addresses(set) != "w=10.0.0.2,x=10.0.0.1" {
		t.Fatalf("%s %v", addresses(set), errs)
	}

	// b now also defines x, in another version of the kind: b is in error, and keeps y.
	writeFile(t, b, workload("w", "10.0.0.3")+"---\n"+strings.Replace(workload("x", "10.0.0.4"), "/v1\n", "/v1alpha3\n", 1))
	set, errs := l.Load()
	if addresses(set) != "w=10.0.0.2,x=10.0.0.1" || len(errs) != 1 {
		t.Fatalf("%s %v", addresses(set), errs)
	}
	want := b + ": document 1 (WorkloadEntry default/x): metadata.name: duplicate WorkloadEntry default/x: also defined in " + a + " document 0"
	if errs[0].Error() != want {
		t.Errorf("got  %s\nwant %s", errs[0], want)
	}
}

func TestLoaderFiles(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.yml"), workload("a", "10.0.0.1"))
	writeFile(t, filepath.Join(dir, "sub", "deeper", "b.YAML"), workload("b", "10.0.0.2"))
	writeFile(t, filepath.Join(dir, ".hidden.yaml"), "broken: [")
	writeFile(t, filepath.Join(dir, ".git", "c.yaml"), "broken: [")
	writeFile(t, filepath.Join(dir, "notes.txt"), "broken: [")
	writeFile(t, filepath.Join(dir, "a.yaml~"), "broken: [")
	if err := os.Symlink(filepath.Join(dir, "sub", "deeper", "b.YAML"), filepath.Join(dir, "link.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir, filepath.Join(dir, "sub", "loop")); err != nil {
		t.Fatal(err)
	}
	set, errs := NewLoader(dir).Load()
	// link.yaml defines b again: a symlink is a file like any other.
	if addresses(set) != "a=10.0.0.1,b=10.0.0.2" || len(errs) != 1 || errs[0].File != filepath.Join(dir, "sub", "deeper", "b.YAML") {
		t.Fatalf("%s %v", addresses(set), errs)
	}
}

func TestLoaderSortsObjects(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.yaml"), strings.Replace(workload("z", "10.0.0.1"), "{name: z}", "{name: z, namespace: b}", 1)+"---\n"+workload("w", "10.0.0.2"))
	writeFile(t, filepath.Join(dir, "b.yaml"), workload("x", "10.0.0.3"))
	set, errs := NewLoader(dir).Load()
	var got []string
	for _, we := range set.WorkloadEntries {
		got = append(got, we.Namespace+"/"+we.Name)
	}
	if len(errs) > 0 || !slices.Equal(got, []string{"b/z", "default/w", "default/x"}) {
		t.Fatalf("%v %v", got, errs)
	}
}

func TestLoaderFolderProblems(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	l := NewLoader(cfg)
	set, errs := l.Load()
	if set.Len() != 0 || len(errs) != 1 || errs[0].File != cfg || errs[0].Doc != -1 {
		t.Fatalf("missing folder: %v", errs)
	}
	writeFile(t, filepath.Join(cfg, "a.yaml"), workload("a", "10.0.0.1"))
	if set, errs = l.Load(); addresses(set) != "a=10.0.0.1" || len(errs) > 0 {
		t.Fatalf("%s %v", addresses(set), errs)
	}
	// The folder goes away: serve the last good configuration rather than nothing.
	if err := os.Rename(cfg, cfg+".old"); err != nil {
		t.Fatal(err)
	}
	set, errs = l.Load()
	if addresses(set) != "a=10.0.0.1" || len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), cfg+": reading configuration folder") {
		t.Fatalf("folder gone: %s %v", addresses(set), errs)
	}

	// A file instead of a folder.
	file := filepath.Join(dir, "file.yaml")
	writeFile(t, file, workload("a", "10.0.0.1"))
	if _, errs := NewLoader(file).Load(); len(errs) != 1 || !strings.Contains(errs[0].Error(), "not a directory") {
		t.Fatalf("file as folder: %v", errs)
	}
}

// TestLoaderUnreadable: a file or folder that cannot be read keeps its last good contents and
// is reported. Permission bits do not stop root (CI runs as root), so the unreadable file is a
// link to /proc/self/mem, which fails to read for everyone; the unreadable folder needs
// permission bits and is checked only when the test does not run as root.
func TestLoaderUnreadable(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	writeFile(t, filepath.Join(sub, "a.yaml"), workload("a", "10.0.0.1"))
	b := filepath.Join(dir, "b.yaml")
	writeFile(t, b, workload("b", "10.0.0.2"))
	l := NewLoader(dir)
	if set, errs := l.Load(); addresses(set) != "a=10.0.0.1,b=10.0.0.2" || len(errs) > 0 {
		t.Fatalf("%s %v", addresses(set), errs)
	}
	if err := os.Remove(b); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/proc/self/mem", b); err != nil {
		t.Fatal(err)
	}
	set, errs := l.Load()
	if addresses(set) != "a=10.0.0.1,b=10.0.0.2" || !slices.Equal(errorFiles(errs), []string{b}) {
		t.Fatalf("unreadable file: %s %v", addresses(set), errs)
	}
	if os.Geteuid() == 0 {
		return
	}
	if err := os.Chmod(sub, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(sub, 0o755) })
	set, errs = l.Load()
	if addresses(set) != "a=10.0.0.1,b=10.0.0.2" || !slices.Equal(errorFiles(errs), []string{sub, b}) {
		t.Fatalf("unreadable folder: %s %v", addresses(set), errs)
	}
}
