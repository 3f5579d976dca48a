package cni

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestChainAndUnchain(t *testing.T) {
	for _, tc := range []struct {
		name     string
		files    map[string]string
		wantFile string
		wantErr  string
		wantLen  int
	}{
		{
			name:     "conflist gets the plugin last",
			files:    map[string]string{"10-calico.conflist": `{"cniVersion":"1.0.0","name":"k8s-pod-network","plugins":[{"type":"calico"},{"type":"portmap"}]}`},
			wantFile: "10-calico.conflist", wantLen: 3,
		},
		{
			name:     "an earlier Ambit entry is replaced, not doubled",
			files:    map[string]string{"10-x.conflist": `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"ambit-cni","agentSocket":"/old"}]}`},
			wantFile: "10-x.conflist", wantLen: 2,
		},
		{
			name:     "single-plugin conf becomes a conflist",
			files:    map[string]string{"10-flannel.conf": `{"cniVersion":"0.3.1","name":"cbr0","type":"flannel","delegate":{"isDefaultGateway":true}}`},
			wantFile: "10-flannel.conflist", wantLen: 2,
		},
		{
			name:     "the first file by name is the runtime's",
			files:    map[string]string{"20-b.conflist": `{"name":"b","plugins":[{"type":"b"}]}`, "10-a.conflist": `{"name":"a","plugins":[{"type":"a"}]}`},
			wantFile: "10-a.conflist", wantLen: 2,
		},
		{name: "empty directory", files: map[string]string{}, wantErr: "no CNI configuration"},
		{name: "not JSON", files: map[string]string{"10-x.conflist": `{`}, wantErr: "10-x.conflist is not JSON"},
		{name: "neither list nor plugin", files: map[string]string{"10-x.conf": `{"name":"x"}`}, wantErr: "neither plugins nor a type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, body := range tc.files {
				os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644)
			}
			got, err := Chain(dir, map[string]any{"agentSocket": "/var/run/ambit/cni.sock"})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Base(got) != tc.wantFile {
				t.Errorf("wrote %s, want %s", got, tc.wantFile)
			}
			var conf struct {
				Name    string           `json:"name"`
				Plugins []map[string]any `json:"plugins"`
			}
			data, _ := os.ReadFile(got)
			if err := json.Unmarshal(data, &conf); err != nil {
				t.Fatal(err)
			}
			if len(conf.Plugins) != tc.wantLen || conf.Plugins[len(conf.Plugins)-1]["type"] != PluginName ||
				conf.Plugins[len(conf.Plugins)-1]["agentSocket"] != "/var/run/ambit/cni.sock" || conf.Name == "" {
				t.Errorf("chain: %s", data)
			}
			if err := Unchain(dir); err != nil {
				t.Fatal(err)
			}
			data, _ = os.ReadFile(got)
			if strings.Contains(string(data), PluginName) {
				t.Errorf("after Unchain: %s", data)
			}
		})
	}
}
