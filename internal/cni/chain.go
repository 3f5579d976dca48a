package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// InstallBinary copies the plugin binary into the node's CNI bin
// directory, atomically: a runtime never executes a half-written file.
func InstallBinary(src, binDir string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("cni install: %w", err)
	}
	defer in.Close()
	dst := filepath.Join(binDir, PluginName)
	tmp, err := os.CreateTemp(binDir, "."+PluginName+"-*")
	if err != nil {
		return fmt.Errorf("cni install: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("cni install: %w", err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// primaryConfig is the configuration the runtime uses: the first *.conflist
// or *.conf in the directory by name, as libcni picks it.
func primaryConfig(confDir string) (string, error) {
	entries, err := os.ReadDir(confDir)
	if err != nil {
		return "", fmt.Errorf("cni install: %w", err)
	}
	for _, e := range entries { // sorted by name
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		switch filepath.Ext(e.Name()) {
		case ".conflist", ".conf", ".json":
			return filepath.Join(confDir, e.Name()), nil
		}
	}
	return "", fmt.Errorf("cni install: no CNI configuration in %s yet (the cluster's network plugin writes it; Ambit chains after it)", confDir)
}

// Chain adds the plugin (with its settings) to the end of the node's
// primary CNI configuration, replacing an earlier Ambit entry. A single
// plugin .conf becomes a .conflist of the same name. It returns the file
// written.
func Chain(confDir string, settings map[string]any) (string, error) {
	path, err := primaryConfig(confDir)
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cni install: %w", err)
	}
	var conf map[string]any
	if err := json.Unmarshal(data, &conf); err != nil {
		return "", fmt.Errorf("cni install: %s is not JSON: %w", path, err)
	}
	plugins, isList := conf["plugins"].([]any)
	if !isList {
		if _, ok := conf["type"]; !ok {
			return "", fmt.Errorf("cni install: %s has neither plugins nor a type", path)
		}
		single := conf
		conf = map[string]any{"cniVersion": single["cniVersion"], "name": single["name"]}
		delete(single, "cniVersion")
		delete(single, "name")
		plugins = []any{single}
	}
	plugins = withoutAmbit(plugins)
	entry := map[string]any{"type": PluginName}
	for k, v := range settings {
		entry[k] = v
	}
	conf["plugins"] = append(plugins, entry)
	out, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return "", err
	}
	dst := path
	if !isList {
		dst = strings.TrimSuffix(path, filepath.Ext(path)) + ".conflist"
	}
	if err := writeAtomic(dst, append(out, '\n')); err != nil {
		return "", err
	}
	if dst != path {
		if err := os.Remove(path); err != nil {
			return "", fmt.Errorf("cni install: %w", err)
		}
	}
	return dst, nil
}

// Unchain removes the plugin from every configuration in the directory,
// so pods keep starting (outside the mesh) once Ambit is gone.
func Unchain(confDir string) error {
	entries, err := os.ReadDir(confDir)
	if err != nil {
		return fmt.Errorf("cni uninstall: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if filepath.Ext(e.Name()) != ".conflist" {
			continue
		}
		path := filepath.Join(confDir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var conf map[string]any
		if json.Unmarshal(data, &conf) != nil {
			continue // not ours to judge
		}
		plugins, ok := conf["plugins"].([]any)
		if !ok {
			continue
		}
		kept := withoutAmbit(plugins)
		if len(kept) == len(plugins) {
			continue
		}
		conf["plugins"] = kept
		out, err := json.MarshalIndent(conf, "", "  ")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, writeAtomic(path, append(out, '\n')))
	}
	return errors.Join(errs...)
}

func withoutAmbit(plugins []any) []any {
	return slices.DeleteFunc(slices.Clone(plugins), func(p any) bool {
		m, ok := p.(map[string]any)
		return ok && m["type"] == PluginName
	})
}

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ambit-*")
	if err != nil {
		return fmt.Errorf("cni install: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
