package main

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	cg := func(content string) string {
		p := filepath.Join(dir, content)
		if err := os.WriteFile(p, []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, flag, env, cgroup string
		want                    int64
		wantErr                 bool
	}{
		{name: "flag", flag: "64MiB", want: 64 << 20},
		{name: "flag in bytes", flag: "1000000", want: 1000000},
		{name: "flag beats env and cgroup", flag: "1GiB", env: "5MiB", cgroup: cg("1073741824"), want: 1 << 30},
		{name: "off", flag: "off", want: math.MaxInt64},
		{name: "GOMEMLIMIT already applied", env: "32MiB", cgroup: cg("1073741824"), want: 0},
		{name: "90% of the cgroup limit", cgroup: cg("104857600"), want: 94371840},
		{name: "cgroup without limit", cgroup: cg("max"), want: 0},
		{name: "no cgroup file", cgroup: filepath.Join(dir, "none"), want: 0},
		{name: "bad flag", flag: "lots", wantErr: true},
		{name: "negative", flag: "-1MiB", wantErr: true},
		{name: "overflow", flag: "99999999999TiB", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := memoryLimit(tc.flag, tc.env, tc.cgroup)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("memoryLimit(%q, %q) = %d, %v; want %d (error %v)", tc.flag, tc.env, got, err, tc.want, tc.wantErr)
			}
		})
	}
}
