// Command genchart writes the Helm chart's generated parts: the template
// from internal/install's Render and the CRDs embedded in the binary. Run
// by `go generate ./internal/install`; a test fails when they are stale.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ambit-mesh/ambit/internal/install"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: genchart CHARTDIR")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "genchart:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	tmpl, err := install.ChartTemplate()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "templates", "ambit.yaml"), tmpl, 0o644); err != nil {
		return err
	}
	for _, f := range install.CRDFiles() {
		if err := os.WriteFile(filepath.Join(dir, "crds", f.Name), f.Data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
