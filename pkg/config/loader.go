package config

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Loader reads a configuration folder, remembering the last good contents of each file.
//
// The unit of acceptance is the file: a file is taken whole when every document in it decodes
// and validates, and otherwise the Loader keeps using what that file held the last time it was
// good (or nothing, if it never was). This way an edit that breaks one file never removes
// configuration from the mesh, and never holds back edits to other files.
type Loader struct {
	dir string

	mu    sync.Mutex
	files map[string]*fileState // by path, for files that were good at least once
	// read digests what the last Load read (see folderView), for Stale.
	read [sha256.Size]byte
}

// fileState is the last good contents of one file.
type fileState struct {
	data    []byte    // the bytes that parsed, to skip re-parsing an unchanged file
	entries []decoded // what they held
}

// NewLoader returns a Loader for the folder dir. It reads nothing until Load.
func NewLoader(dir string) *Loader {
	return &Loader{dir: dir, files: map[string]*fileState{}}
}

// Load re-reads every *.yaml and *.yml file under the folder (recursively, in lexical order,
// skipping hidden files and folders) and returns the resulting set and the current problems.
//
// A file with any problem contributes its last good contents, if it had any. Deleted files
// contribute nothing. Two objects of the same kind, namespace and name in different files are
// an error against the file that comes later; that file is treated as failed, so it falls back
// to its last good contents if those do not collide too. When the folder itself cannot be read,
// Load returns the last good contents of every file along with the error, rather than an empty
// mesh. Load may be called from several goroutines.
func (l *Loader) Load() (*Set, []*Error) {
	l.mu.Lock()
	defer l.mu.Unlock()

	paths, unreadable, err := listFiles(l.dir)
	view := newFolderView(unreadable, err)
	defer func() { l.read = view.sum() }()
	if err != nil {
		// Serve what we had: a folder that is briefly missing (a remount, a checkout in
		// progress) must not empty the mesh.
		var objects []Object
		for _, path := range sortedKeys(l.files) {
			objects = append(objects, objectsOf(l.files[path].entries)...)
		}
		return NewSet(objects...), []*Error{err}
	}
	errs := unreadable

	var (
		objects []Object
		owners  = map[string]location{} // objectKey → where it was first defined
		next    = map[string]*fileState{}
	)
	accept := func(path string, entries []decoded) {
		for _, e := range entries {
			owners[objectKey(e.obj)] = location{file: path, doc: e.doc}
			objects = append(objects, e.obj)
		}
	}
	for _, path := range paths {
		prev := l.files[path]
		data, err := os.ReadFile(path)
		view.add(path, data, err)
		var (
			entries []decoded
			ferrs   []*Error
		)
		switch {
		case err != nil:
			ferrs = []*Error{{File: path, Doc: -1, Err: fmt.Errorf("reading file: %w", err)}}
		case prev != nil && bytes.Equal(prev.data, data):
			entries = prev.entries // unchanged since it was last good
		default:
			entries, ferrs = parseFile(path, data)
		}
		if len(ferrs) == 0 {
			ferrs = collisions(path, entries, owners)
		}
		if len(ferrs) == 0 {
			accept(path, entries)
			next[path] = &fileState{data: data, entries: entries}
			continue
		}
		errs = append(errs, ferrs...)
		if prev != nil {
			next[path] = prev // keep it for later Loads even if it cannot be used now
			if len(collisions(path, prev.entries, owners)) == 0 {
				accept(path, prev.entries)
			}
		}
	}
	// Files under folders that could not be read are not known to be deleted: keep them.
	for path, st := range l.files {
		if _, seen := next[path]; !seen && underAny(path, unreadable) {
			next[path] = st
			if len(collisions(path, st.entries, owners)) == 0 {
				accept(path, st.entries)
			}
		}
	}
	l.files = next
	return NewSet(objects...), errs
}

// Stale reports whether the folder now holds something other than what the last Load read: a
// file written, added or removed since. It reads every file, so it is for occasional checks
// (someone waiting for a change to be served), not for polling a large folder.
func (l *Loader) Stale() bool {
	paths, unreadable, err := listFiles(l.dir)
	view := newFolderView(unreadable, err)
	for _, path := range paths {
		data, err := os.ReadFile(path)
		view.add(path, data, err)
	}
	now := view.sum()
	l.mu.Lock()
	defer l.mu.Unlock()
	return now != l.read
}

// folderView digests what a read of the folder saw: each file's path and contents (or the
// error reading it), the subfolders that could not be read, and a problem with the folder.
type folderView struct {
	h hash.Hash
}

func newFolderView(unreadable []*Error, folderErr *Error) folderView {
	v := folderView{h: sha256.New()}
	if folderErr != nil {
		fmt.Fprintf(v.h, "folder\x00%s\x00", folderErr.Error())
	}
	for _, e := range unreadable {
		fmt.Fprintf(v.h, "unreadable\x00%s\x00", e.File)
	}
	return v
}

func (v folderView) add(path string, data []byte, err error) {
	if err != nil {
		fmt.Fprintf(v.h, "error\x00%s\x00%s\x00", path, err)
		return
	}
	sum := sha256.Sum256(data)
	fmt.Fprintf(v.h, "file\x00%s\x00%x\x00", path, sum)
}

func (v folderView) sum() (out [sha256.Size]byte) {
	copy(out[:], v.h.Sum(nil))
	return out
}

// location is where an object was defined.
type location struct {
	file string
	doc  int
}

// collisions reports the objects of a file that another, earlier file already defines.
func collisions(path string, entries []decoded, owners map[string]location) []*Error {
	var errs []*Error
	for _, e := range entries {
		if at, dup := owners[objectKey(e.obj)]; dup {
			errs = append(errs, objectError(path, e.doc, e.obj, "metadata.name",
				fmt.Errorf("duplicate %s: also defined in %s document %d", objectKey(e.obj), at.file, at.doc)))
		}
	}
	return errs
}

// listFiles returns the configuration files under dir in lexical walk order. Problems with
// subfolders are returned as errors (their paths in Error.File) without stopping the walk; a
// problem with dir itself is the error.
func listFiles(dir string) (paths []string, unreadable []*Error, err *Error) {
	info, statErr := os.Stat(dir)
	switch {
	case statErr != nil:
		return nil, nil, &Error{File: dir, Doc: -1, Err: fmt.Errorf("reading configuration folder: %w", statErr)}
	case !info.IsDir():
		return nil, nil, &Error{File: dir, Doc: -1, Err: errors.New("reading configuration folder: not a directory")}
	}
	walkErr := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == dir {
				return err
			}
			unreadable = append(unreadable, &Error{File: path, Doc: -1, Err: fmt.Errorf("reading folder: %w", err)})
			return nil // WalkDir skips the folder
		}
		if path == dir {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			// Hidden: editor swap files, .git, and the ..data links of Kubernetes volumes.
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || !isConfigFile(d.Name()) {
			return nil
		}
		// Symbolic links to files are followed (Kubernetes volumes are made of them); links to
		// folders are not, which rules out cycles. Anything but a regular file, such as a FIFO,
		// could block reading.
		if d.Type()&fs.ModeSymlink != 0 {
			target, err := os.Stat(path)
			if err != nil || !target.Mode().IsRegular() {
				return nil
			}
		} else if !d.Type().IsRegular() {
			return nil
		}
		paths = append(paths, path)
		return nil
	})
	if walkErr != nil {
		return nil, nil, &Error{File: dir, Doc: -1, Err: fmt.Errorf("reading configuration folder: %w", walkErr)}
	}
	return paths, unreadable, nil
}

func isConfigFile(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	return ext == ".yaml" || ext == ".yml"
}

// underAny reports whether path is inside one of the folders named by errs.
func underAny(path string, errs []*Error) bool {
	for _, e := range errs {
		if strings.HasPrefix(path, e.File+string(filepath.Separator)) {
			return true
		}
	}
	return false
}
