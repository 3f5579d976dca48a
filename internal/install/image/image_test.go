package image

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The image holds the three binaries, statically linked, and the archive
// is an OCI layout naming the tag.
func TestBuild(t *testing.T) {
	bin := t.TempDir()
	cmd := exec.Command("go", "build", "-o", bin, "github.com/ambit-mesh/ambit/cmd/ambit", "github.com/ambit-mesh/ambit/cmd/ztunnel", "github.com/ambit-mesh/ambit/cmd/waypoint", "github.com/ambit-mesh/ambit/cmd/ambit-cni")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	img, err := Build(bin, "test")
	if err != nil {
		t.Fatal(err)
	}
	again, err := Build(bin, "test")
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("not reproducible: %s then %s", d1, d2)
	}
	cfg, err := img.ConfigFile()
	if err != nil || cfg.Config.Entrypoint[0] != "/ambit" || cfg.OS != "linux" {
		t.Errorf("config: %+v, %v", cfg, err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	found := map[string]bool{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		data, _ := io.ReadAll(tr)
		f, err := elf.NewFile(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: not an ELF binary: %v", h.Name, err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked", h.Name)
			}
		}
		found[h.Name] = h.Mode&0o111 != 0
	}
	for _, b := range Binaries {
		if !found[b] {
			t.Errorf("%s missing or not executable in the image", b)
		}
	}

	archive := filepath.Join(t.TempDir(), "image.tar")
	if err := WriteOCIArchive(archive, img, "example.org/ambit:test"); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := map[string][]byte{}
	tr = tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "index.json" || h.Name == "oci-layout" {
			names[h.Name], _ = io.ReadAll(tr)
		}
	}
	var index struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(names["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %s (%v)", names["index.json"], err)
	}
	if m := index.Manifests[0]; m.Digest != d1.String() || m.Annotations["org.opencontainers.image.ref.name"] != "example.org/ambit:test" {
		t.Errorf("index: %+v, want digest %s", m, d1)
	}
	if len(names["oci-layout"]) == 0 {
		t.Error("no oci-layout file")
	}
}
