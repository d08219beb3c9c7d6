package config

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Default debounce durations: short enough that an edit shows up at once, long enough that
// an editor's save (often several writes and renames) is one reload.
const (
	DefaultQuiet    = 100 * time.Millisecond
	DefaultMaxDelay = time.Second
)

// Watcher calls OnChange when files under Dir change. It watches folders rather than files,
// so editors that save by writing a new file and renaming it over the old one are seen, and
// it watches subfolders, including ones created later.
type Watcher struct {
	// Dir is the folder to watch.
	Dir string
	// OnChange is called, from one goroutine at a time, after changes settle: once Quiet
	// passes with no further change, or MaxDelay after the first change of a burst, whichever
	// comes first. It is typically Loader.Load followed by publishing the result.
	OnChange func()
	// Quiet and MaxDelay default to DefaultQuiet and DefaultMaxDelay when zero.
	Quiet, MaxDelay time.Duration
	// Ready, if set, is called once the folders are watched: changes made from then on are
	// reported. Loading after Ready closes the gap between an initial Load and the watch.
	Ready func()
	// Logger receives problems with watching; nil means slog.Default().
	Logger *slog.Logger

	// noticed counts the changes seen (events and Notify calls); settled is the value noticed
	// had when the last OnChange call that has returned began. They differ while a change
	// waits for its OnChange call, or while that call runs: see Pending.
	noticed, settled atomic.Uint64
	eventsOnce       sync.Once
	events           chan struct{}
}

// Pending reports whether a change has been seen whose OnChange call has not returned yet:
// the debounce is still waiting, or the call is running. A caller that has just written a
// file and wants to know when pilot has read it waits for Pending to turn false (but see
// Loader.Stale: the kernel reports a write to the watcher a moment after it happened).
func (w *Watcher) Pending() bool { return w.noticed.Load() != w.settled.Load() }

// Notify reports a change as if the folder had reported one: an OnChange call follows, after
// the usual debounce. It is for callers that know of a change the watch may not have seen
// yet, or missed.
func (w *Watcher) Notify() {
	w.noticed.Add(1)
	// One pending event is enough: the debouncer only needs to know something happened.
	select {
	case w.eventsChan() <- struct{}{}:
	default:
	}
}

func (w *Watcher) eventsChan() chan struct{} {
	w.eventsOnce.Do(func() { w.events = make(chan struct{}, 1) })
	return w.events
}

// Watch calls onChange after files under dir change, debounced with the default durations,
// until ctx is done. See Watcher.
func Watch(ctx context.Context, dir string, onChange func()) error {
	return (&Watcher{Dir: dir, OnChange: onChange}).Run(ctx)
}

// Run watches until ctx is done, and then returns nil once any OnChange call in progress has
// returned. It returns an error if the folder cannot be watched at all.
func (w *Watcher) Run(ctx context.Context) error {
	log := w.Logger
	if log == nil {
		log = slog.Default()
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", w.Dir, err)
	}
	defer fw.Close()

	// fsnotify names events with cleaned paths; so must the folders we track.
	s := &watchState{fw: fw, root: filepath.Clean(w.Dir), dirs: map[string]bool{}}
	if err := s.addTree(s.root); err != nil {
		return fmt.Errorf("watching %s: %w", w.Dir, err)
	}

	d := debouncer{Quiet: w.Quiet, MaxDelay: w.MaxDelay}
	if d.Quiet <= 0 {
		d.Quiet = DefaultQuiet
	}
	if d.MaxDelay <= 0 {
		d.MaxDelay = DefaultMaxDelay
	}
	onChange := func() {
		// Every change noticed before this point is on disk before the call reads the folder.
		seen := w.noticed.Load()
		if w.OnChange != nil {
			w.OnChange()
		}
		w.settled.Store(seen)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.run(ctx, w.eventsChan(), onChange)
	}()
	defer func() { <-done }()

	if w.Ready != nil {
		w.Ready()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return fmt.Errorf("watching %s: event stream closed", w.Dir)
			}
			if s.handle(ev, log) {
				w.Notify()
			}
		case err, ok := <-fw.Errors:
			if !ok {
				return fmt.Errorf("watching %s: error stream closed", w.Dir)
			}
			log.Warn("config watch error", "dir", w.Dir, "err", err)
			// After an overflow, events were lost; reloading covers whatever they were.
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				w.Notify()
			}
		}
	}
}

// watchState tracks the watched folders.
type watchState struct {
	fw   *fsnotify.Watcher
	root string
	dirs map[string]bool
}

// addTree watches root and every non-hidden folder under it.
func (s *watchState) addTree(root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == root {
				return err
			}
			return nil // an unreadable subfolder: the Loader reports it
		}
		if !d.IsDir() {
			return nil
		}
		if path != root && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if err := s.fw.Add(path); err != nil {
			if path == root {
				return err
			}
			return nil
		}
		s.dirs[path] = true
		return nil
	})
}

// forget stops tracking a folder that was removed or renamed, and everything under it.
func (s *watchState) forget(dir string) {
	for d := range s.dirs {
		if d == dir || strings.HasPrefix(d, dir+string(filepath.Separator)) {
			_ = s.fw.Remove(d) // fails when the kernel already dropped the watch, which is fine
			delete(s.dirs, d)
		}
	}
}

// handle updates the watches for an event and reports whether it may change the
// configuration.
func (s *watchState) handle(ev fsnotify.Event, log *slog.Logger) bool {
	base := filepath.Base(ev.Name)
	wasDir := s.dirs[ev.Name]
	if wasDir && (ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)) {
		s.forget(ev.Name)
		if ev.Name == s.root {
			// Nothing is watched any more. The reload this event triggers reports the
			// missing folder and keeps serving the last good configuration.
			log.Warn("config folder removed or renamed; changes to it are no longer watched", "dir", s.root)
		}
	}
	hidden := strings.HasPrefix(base, ".")
	if ev.Has(fsnotify.Create) && !hidden {
		if info, err := os.Stat(ev.Name); err == nil && info.IsDir() {
			// Files may have been created in it before the watch was added; the reload
			// this event triggers reads them.
			if err := s.addTree(ev.Name); err != nil {
				log.Warn("cannot watch new config folder", "dir", ev.Name, "err", err)
			}
			return true
		}
	}
	switch {
	case strings.HasPrefix(base, ".."):
		// Kubernetes volumes swap their ..data link to publish a new version.
		return true
	case hidden:
		// Editor swap files, .git and the like.
		return false
	default:
		return wasDir || isConfigFile(base)
	}
}
