package config

import (
	"strings"
	"testing"
)

func TestLocalCluster(t *testing.T) {
	head := "apiVersion: ambit.dev/v1alpha1\nkind: LocalCluster\nmetadata:\n  name: demo\nspec:\n"
	tests := []struct {
		name, spec string
		wantErrs   []string
	}{
		{"nodes and ranges", "  nodes:\n  - {name: node-a, zone: zone-a, region: eu}\n  - {name: node-b, zone: zone-b}\n  podCIDR: 10.244.0.0/16\n  serviceCIDR: 10.96.0.0/16\n", nil},
		{"empty spec", "  {}\n", nil},
		{"duplicate and bad names", "  nodes:\n  - {name: node-a}\n  - {name: node-a}\n  - {name: Node_B}\n  - {zone: z}\n", []string{
			`spec.nodes[1].name: node "node-a" is already defined at spec.nodes[0]`, "spec.nodes[2].name:", "spec.nodes[3].name: required"}},
		{"bad CIDRs", "  podCIDR: 10.244.0.0/25\n  serviceCIDR: nope\n", []string{"spec.podCIDR: 10.244.0.0/25 is too small", `spec.serviceCIDR: "nope" is not a CIDR`}},
		{"host bits", "  podCIDR: 10.244.1.0/16\n", []string{"did you mean 10.244.0.0/16?"}},
		{"too many nodes", "  podCIDR: 10.244.0.0/23\n  nodes: [{name: a}, {name: b}, {name: c}]\n", []string{"holds 2 /24 node ranges, but 3 nodes are defined"}},
		{"overlap", "  podCIDR: 10.0.0.0/8\n  serviceCIDR: 10.96.0.0/16\n", []string{"spec.serviceCIDR: 10.96.0.0/16 overlaps podCIDR 10.0.0.0/8"}},
		{"unknown field", "  zones: 3\n", []string{`spec.zones: unknown field "zones"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Parse("cluster.yaml", []byte(head+tt.spec))
			if len(tt.wantErrs) == 0 {
				if err != nil || len(objs) != 1 {
					t.Fatalf("err %v, %d objects", err, len(objs))
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.wantErrs {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
			if !strings.Contains(err.Error(), "cluster.yaml: document 1") || !strings.Contains(err.Error(), "LocalCluster demo") {
				t.Errorf("error does not locate the object: %v", err)
			}
		})
	}
}
