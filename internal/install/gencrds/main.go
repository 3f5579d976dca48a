// Command gencrds copies the CustomResourceDefinitions Ambit installs from
// the pinned Go modules into internal/install/crds, so the CRDs always match
// the Go types the control plane was built with. Run by `go generate
// ./internal/install`; a test fails when the copies are stale.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ambit-mesh/ambit/internal/install/crdsource"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gencrds OUTDIR")
		os.Exit(2)
	}
	files, err := crdsource.Read()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gencrds:", err)
		os.Exit(1)
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(os.Args[1], f.Name), f.Data, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "gencrds:", err)
			os.Exit(1)
		}
	}
}
