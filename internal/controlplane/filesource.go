package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
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
	// change, until ctx is done; never concurrently. An invalid change is
	// reported through the source's logger and metrics and not delivered:
	// the last good snapshot stays in force.
	Run(ctx context.Context, update func(*model.Snapshot)) error
}

// FileSource reads manifests from files and directories and watches them.
//
// Watching polls file names, sizes, modification times and inodes: it needs
// no inotify limits and works on every filesystem (including bind mounts and
// ConfigMap symlink swaps). A change re-parses only the files that changed;
// the objects of the others carry over unchanged, so translation reuses
// their results.
type FileSource struct {
	// Paths are YAML files or directories (searched recursively for *.yaml, *.yml).
	Paths []string
	// Interval between checks for changes; default 200ms, so a change is
	// pushed well within a second.
	Interval time.Duration
	Log      *slog.Logger
	// OnResult, if set, is told the outcome of every load (nil error on success).
	OnResult func(err error)

	snap  *model.Snapshot
	files map[string]loadedFile
	// failed holds the stamps of a rejected state (joinStamps), or "".
	failed string
}

type loadedFile struct {
	stamp string
	refs  []model.Ref
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
	changed, err := f.reload()
	f.report(err)
	if err != nil {
		return fmt.Errorf("initial configuration is invalid:\n%w", err)
	}
	log.Info("configuration loaded", "objects", f.snap.Len(), "paths", strings.Join(f.Paths, ","))
	update(f.snap)

	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		changed, err = f.reload()
		if !changed {
			continue
		}
		f.report(err)
		if err != nil {
			log.Error("configuration change rejected; keeping the last good configuration", "error", err)
			continue
		}
		log.Info("configuration changed", "objects", f.snap.Len())
		update(f.snap)
	}
}

// reload brings f.snap up to date with the files. It reports whether any
// file changed; on error f.snap and f.files are left as they were, and the
// same broken state is not reported again until a file changes.
func (f *FileSource) reload() (changed bool, err error) {
	stamps, err := stampFiles(f.Paths)
	if err != nil {
		return true, err
	}
	if f.failed != "" && joinStamps(stamps) == f.failed {
		return false, nil
	}
	var dirty []string
	for path, st := range stamps {
		if f.files[path].stamp != st {
			dirty = append(dirty, path)
		}
	}
	removed := 0
	for path := range f.files {
		if _, ok := stamps[path]; !ok {
			removed++
		}
	}
	if f.snap != nil && len(dirty) == 0 && removed == 0 {
		return false, nil
	}
	sort.Strings(dirty)

	var next *model.Snapshot
	if f.snap == nil {
		next = model.NewSnapshot()
	} else {
		next = f.snap.Clone()
	}
	files := make(map[string]loadedFile, len(stamps))
	for path, lf := range f.files {
		if _, ok := stamps[path]; !ok || lf.stamp != stamps[path] {
			for _, ref := range lf.refs {
				next.Delete(ref)
			}
			continue
		}
		files[path] = lf
	}
	var errs []error
	for _, path := range dirty {
		data, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		objs, err := config.Parse(path, data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		lf := loadedFile{stamp: stamps[path]}
		for _, o := range objs {
			if err := next.Add(o.Obj, o.Origin); err != nil {
				errs = append(errs, err)
				continue
			}
			lf.refs = append(lf.refs, o.Ref)
		}
		files[path] = lf
	}
	if len(errs) > 0 {
		// Nothing of a broken state is applied, not even the files that are
		// fine: the configuration changes atomically. The state is
		// remembered so the same error is not reported every interval.
		f.failed = joinStamps(stamps)
		return true, errors.Join(errs...)
	}
	f.snap, f.files, f.failed = next, files, ""
	return true, nil
}

func joinStamps(stamps map[string]string) string {
	var b strings.Builder
	for _, p := range slices.Sorted(maps.Keys(stamps)) {
		b.WriteString(p + "\x00" + stamps[p] + "\n")
	}
	return b.String()
}

func (f *FileSource) report(err error) {
	if f.OnResult != nil {
		f.OnResult(err)
	}
}

// stampFiles maps every manifest under paths to a stamp of its size,
// modification time and inode.
func stampFiles(paths []string) (map[string]string, error) {
	out := map[string]string{}
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
			out[path] = fmt.Sprintf("%d/%d/%d", info.Size(), info.ModTime().UnixNano(), ino)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func isManifest(path string) bool {
	ext := strings.ToLower(filepath.Ext(path))
	return ext == ".yaml" || ext == ".yml"
}
