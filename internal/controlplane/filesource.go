package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/ambit-mesh/ambit/internal/config"
	"github.com/ambit-mesh/ambit/internal/model"
)

// Source feeds the control plane complete, valid Snapshots.
type Source interface {
	// Run calls update with the first snapshot and then with every valid
	// change, until ctx is done. An invalid change is reported through the
	// source's logger and metrics and not delivered: the last good snapshot
	// stays in force.
	Run(ctx context.Context, update func(*model.Snapshot)) error
}

// FileSource reads manifests from files and directories and watches them.
//
// Watching polls file names, sizes and modification times: it needs no
// inotify limits, works on every filesystem (including bind mounts and
// ConfigMap symlink swaps), and at the default interval costs a few
// microseconds per file.
type FileSource struct {
	// Paths are YAML files or directories (searched recursively for *.yaml, *.yml).
	Paths []string
	// Interval between checks for changes; default 200ms, so a change is
	// pushed well within a second.
	Interval time.Duration
	Log      *slog.Logger
	// OnResult, if set, is told the outcome of every load (nil error on success).
	OnResult func(err error)
}

// Load reads the current files once.
func (f *FileSource) Load() (*model.Snapshot, error) {
	return config.Load(f.Paths...)
}

func (f *FileSource) Run(ctx context.Context, update func(*model.Snapshot)) error {
	interval := f.Interval
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	log := f.Log
	if log == nil {
		log = slog.Default()
	}
	print, err := fingerprint(f.Paths)
	if err != nil {
		return err
	}
	snap, err := f.Load()
	f.report(err)
	if err != nil {
		return fmt.Errorf("initial configuration is invalid:\n%w", err)
	}
	log.Info("configuration loaded", "objects", snap.Len(), "paths", strings.Join(f.Paths, ","))
	update(snap)

	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		now, err := fingerprint(f.Paths)
		if err != nil {
			log.Error("cannot read configuration; keeping the last good configuration", "error", err)
			f.report(err)
			continue
		}
		if now == print {
			continue
		}
		print = now
		snap, err := f.Load()
		f.report(err)
		if err != nil {
			log.Error("configuration change rejected; keeping the last good configuration", "error", err)
			continue
		}
		log.Info("configuration changed", "objects", snap.Len())
		update(snap)
	}
}

func (f *FileSource) report(err error) {
	if f.OnResult != nil {
		f.OnResult(err)
	}
}

// fingerprint summarizes the names, sizes and modification times of every
// manifest under paths.
func fingerprint(paths []string) (string, error) {
	var entries []string
	for _, p := range paths {
		err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !(path == p || isManifest(path)) {
				return nil
			}
			info, err := os.Stat(path) // follows symlinks, unlike d.Info
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // removed while walking; the next check sees it
				}
				return err
			}
			// The inode catches a same-size rewrite within the filesystem's
			// timestamp granularity (a few ms) when it was written by rename,
			// as editors and config tools do.
			var ino uint64
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				ino = st.Ino
			}
			entries = append(entries, fmt.Sprintf("%s\x00%d\x00%d\x00%d", path, info.Size(), info.ModTime().UnixNano(), ino))
			return nil
		})
		if err != nil {
			return "", err
		}
	}
	sort.Strings(entries)
	return strings.Join(entries, "\n"), nil
}

func isManifest(path string) bool {
	ext := strings.ToLower(filepath.Ext(path))
	return ext == ".yaml" || ext == ".yml"
}
