package config

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ambit-mesh/ambit/internal/model"
)

// Load reads manifests from files and directories (recursively, *.yaml and
// *.yml in lexical order, skipping hidden entries; a file named explicitly
// is read whatever its extension) into a Snapshot.
//
// The error, if any, is an ErrorList of every problem in every file,
// duplicate objects included. The Snapshot is returned even then, holding
// the objects that were valid: `ambit analyze` wants it, a control plane
// should keep its last good Snapshot instead.
func Load(paths ...string) (*model.Snapshot, error) {
	objs, errs := loadObjects(paths)
	s, dups := snapshot(objs)
	errs = append(errs, dups...)
	return s, errs.err()
}

// LoadObjects is Load without building a Snapshot, for callers that want
// the objects in file order with their origins, or that build their own.
func LoadObjects(paths ...string) ([]Object, error) {
	objs, errs := loadObjects(paths)
	return objs, errs.err()
}

// NewSnapshot adds objs to a new Snapshot in order, reporting every object
// whose Ref was already added as an *Error naming both places.
func NewSnapshot(objs []Object) (*model.Snapshot, error) {
	s, errs := snapshot(objs)
	return s, errs.err()
}

func snapshot(objs []Object) (*model.Snapshot, ErrorList) {
	s := model.NewSnapshot()
	var errs ErrorList
	var lines map[model.Ref]int // where each Ref was first seen, for messages
	for _, o := range objs {
		err := s.Add(o.Obj, o.Origin)
		if err == nil {
			continue
		}
		if lines == nil {
			// Built once a duplicate shows up: the common case, no
			// duplicates, pays nothing for it.
			lines = make(map[model.Ref]int, len(objs))
			for _, p := range objs {
				if _, seen := lines[p.Ref]; !seen {
					lines[p.Ref] = p.Line
				}
			}
		}
		e := &Error{File: o.Origin.File, Document: o.Origin.Document, Line: o.Line, Ref: o.Ref}
		if d, ok := err.(*model.DuplicateError); ok {
			first := d.First.String()
			if l := lines[o.Ref]; l > 0 && d.First.File != "" {
				first = fmt.Sprintf("%s: document %d, line %d", d.First.File, d.First.Document, l)
			}
			e.Message = "duplicate object: already defined at " + first
		} else {
			e.Message = err.Error()
		}
		errs = append(errs, e)
	}
	return s, errs
}

func loadObjects(paths []string) ([]Object, ErrorList) {
	files, errs := findFiles(paths)
	workers := runtime.GOMAXPROCS(0)
	type result struct {
		objs []Object
		errs ErrorList
	}
	results := make([]result, len(files))
	parse := func(i, docWorkers int) {
		data, err := os.ReadFile(files[i])
		if err != nil {
			results[i].errs = ErrorList{{File: files[i], Message: "cannot read: " + unwrapPathError(err)}}
			return
		}
		results[i].objs, results[i].errs = parseFile(files[i], data, docWorkers)
	}
	if len(files) < workers {
		// Few (maybe one huge) files: parallelise over documents instead.
		for i := range files {
			parse(i, workers)
		}
	} else {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= len(files) {
						return
					}
					parse(i, 1)
				}
			})
		}
		wg.Wait()
	}
	n := 0
	for _, r := range results {
		n += len(r.objs)
	}
	objs := make([]Object, 0, n)
	for _, r := range results {
		objs = append(objs, r.objs...)
		errs = append(errs, r.errs...)
	}
	return objs, errs
}

// findFiles expands paths into the manifest files to read, in order, each
// once.
func findFiles(paths []string) ([]string, ErrorList) {
	var files []string
	var errs ErrorList
	seen := map[string]bool{}
	add := func(f string) {
		if c := filepath.Clean(f); !seen[c] {
			seen[c] = true
			files = append(files, f)
		}
	}
	for _, root := range paths {
		info, err := os.Stat(root)
		if err != nil {
			errs = append(errs, &Error{File: root, Message: "cannot read: " + unwrapPathError(err)})
			continue
		}
		if !info.IsDir() {
			add(root)
			continue
		}
		err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				errs = append(errs, &Error{File: path, Message: "cannot read: " + unwrapPathError(err)})
				if d != nil && d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if path != root && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return fs.SkipDir // .git and the like
				}
				return nil
			}
			if !d.IsDir() && isManifest(d.Name()) {
				add(path)
			}
			return nil
		})
		if err != nil {
			errs = append(errs, &Error{File: root, Message: "cannot read: " + unwrapPathError(err)})
		}
	}
	return files, errs
}

func isManifest(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	return ext == ".yaml" || ext == ".yml"
}

// unwrapPathError drops the path from an *fs.PathError: the Error already
// names the file.
func unwrapPathError(err error) string {
	if pe, ok := err.(*fs.PathError); ok {
		return pe.Err.Error()
	}
	return err.Error()
}
