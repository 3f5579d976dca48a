// Command mkimage writes Ambit's container image as an OCI archive: `make
// image` builds the static binaries into a directory and runs
//
//	go run ./internal/install/mkimage -bin DIR -o bin/ambit-image.tar -tag ghcr.io/ambit-mesh/ambit:latest
//
// Push it with `crane push bin/ambit-image.tar REF` or `skopeo copy
// oci-archive:bin/ambit-image.tar docker://REF`.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/ambit-mesh/ambit/internal/install/image"
)

func main() {
	bin := flag.String("bin", "", "directory holding the static ambit, ztunnel, waypoint and ambit-cni binaries")
	out := flag.String("o", "bin/ambit-image.tar", "OCI archive to write")
	tag := flag.String("tag", "ghcr.io/ambit-mesh/ambit:latest", "reference recorded in the archive")
	version := flag.String("version", "dev", "image version label")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "mkimage: -bin is required")
		os.Exit(2)
	}
	img, err := image.Build(*bin, *version)
	if err == nil {
		err = image.WriteOCIArchive(*out, img, *tag)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
	d, _ := img.Digest()
	fmt.Printf("wrote %s (%s, %s)\n", *out, *tag, d)
}
