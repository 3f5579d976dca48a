package local

import (
	"strings"
	"testing"

	"github.com/ambit-mesh/ambit/internal/model"
)

const extra = `
apiVersion: v1
kind: Service
metadata: {name: aaa, namespace: demo}
spec:
  selector: {app: aaa}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: aaa, namespace: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: aaa}}
  template:
    metadata: {labels: {app: aaa}}
    spec: {containers: [{name: c, command: [sleep, infinity]}]}
`

func prepareQuickstart(t *testing.T) *Prepared {
	t.Helper()
	p, err := Prepare("t", []string{"../../examples/quickstart"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func placements(p *Prepared) map[string]string {
	out := map[string]string{}
	for _, pod := range p.Plan.Pods {
		out[podKey(pod)] = pod.Spec.NodeName + " " + pod.Status.PodIP
	}
	for _, s := range p.Plan.Services {
		out["svc "+s.Namespace+"/"+s.Name] = s.Spec.ClusterIP
	}
	return out
}

// Applying new objects keeps every pod where it was and every Service's VIP,
// even a new Service that sorts first; deleting them restores the rest as is.
func TestApplyDeleteKeepPlacement(t *testing.T) {
	prep := prepareQuickstart(t)
	before := placements(prep)
	next, lines, err := prep.withApplied([]ManifestFile{{Name: "extra.yaml", Data: extra}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(lines, "; ") != "Service demo/aaa created; Deployment demo/aaa created" {
		t.Errorf("lines %q", lines)
	}
	after := placements(next)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s moved: %s → %s", k, v, after[k])
		}
	}
	if len(after) != len(before)+3 {
		t.Errorf("%d objects placed after apply, want %d", len(after), len(before)+3)
	}
	_, lines, err = next.withApplied([]ManifestFile{{Name: "again.yaml", Data: extra}})
	if err != nil || strings.Join(lines, "; ") != "Service demo/aaa unchanged; Deployment demo/aaa unchanged" {
		t.Errorf("re-apply: %q %v", lines, err)
	}
	gone, lines, err := next.withDeleted([]model.Ref{{Kind: model.KindDeployment, Namespace: "demo", Name: "aaa"}, {Kind: model.KindService, Namespace: "demo", Name: "nope"}})
	if err != nil || strings.Join(lines, "; ") != "Deployment demo/aaa deleted; Service demo/nope not found" {
		t.Errorf("delete: %q %v", lines, err)
	}
	if len(placements(gone)) != len(before)+1 {
		t.Errorf("after delete: %v", placements(gone))
	}
}

func TestApplyRejectsBadManifests(t *testing.T) {
	prep := prepareQuickstart(t)
	for _, tt := range []struct{ yaml, want string }{
		{"apiVersion: v1\nkind: Pod\nmetadata: {name: x, namespace: demo}\nspec:\n  containers: [{name: c, image: nginx}]\n", "no command"},
		{"apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 99999}]\n", "bad.yaml"},
		{"apiVersion: ambit.dev/v1alpha1\nkind: LocalCluster\nmetadata: {name: x}\nspec:\n  nodes: [{name: solo}]\n", "cannot change"},
		{extra + "---\n" + extra, "already defined"},
	} {
		if _, _, err := prep.withApplied([]ManifestFile{{Name: "bad.yaml", Data: tt.yaml}}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("err %v, want %q", err, tt.want)
		}
	}
}

func TestLabels(t *testing.T) {
	prep := prepareQuickstart(t)
	next, lines, err := prep.withLabels(LabelChange{Kind: "namespace", Name: "demo", Remove: []string{"istio.io/dataplane-mode"}})
	if err != nil || lines[0] != "namespace demo labeled" {
		t.Fatalf("%q %v", lines, err)
	}
	if next.Snapshot.Namespaces["demo"].Labels["istio.io/dataplane-mode"] != "" {
		t.Error("label not removed")
	}
	if _, _, err := next.withLabels(LabelChange{Kind: "namespace", Name: "nowhere", Set: map[string]string{"a": "b"}}); err == nil {
		t.Error("labelled a namespace nothing is in")
	}
	if _, _, err := prep.withLabels(LabelChange{Kind: "namespace", Name: "demo", Set: map[string]string{"istio.io/dataplane-mode": "none"}}); err == nil || !strings.Contains(err.Error(), "--overwrite") {
		t.Errorf("overwrite without --overwrite: %v", err)
	}
	if _, _, err := prep.withLabels(LabelChange{Kind: "namespace", Name: "demo", Set: map[string]string{"bad key!": "x"}}); err == nil {
		t.Error("bad label key accepted")
	}
	pod := prep.Plan.Pods[0]
	out, _, err := prep.withLabels(LabelChange{Kind: "pod", Namespace: pod.Namespace, Name: pod.Name, Set: map[string]string{"istio.io/dataplane-mode": "none"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range out.Plan.Pods {
		if p.Name == pod.Name && (p.Labels["istio.io/dataplane-mode"] != "none" || p.Status.PodIP != pod.Status.PodIP) {
			t.Errorf("pod after label: %v %s", p.Labels, p.Status.PodIP)
		}
	}
	if inAmbientPlanned(out, pod.Name) {
		t.Error("pod labelled none is still in ambient")
	}
}

func inAmbientPlanned(p *Prepared, name string) bool {
	for _, pod := range p.Plan.Pods {
		if pod.Name == name {
			return pod.Labels["istio.io/dataplane-mode"] == "ambient" || (pod.Labels["istio.io/dataplane-mode"] == "" && p.Snapshot.Namespaces[pod.Namespace].Labels["istio.io/dataplane-mode"] == "ambient")
		}
	}
	return false
}

func TestServiceRules(t *testing.T) {
	prep := prepareQuickstart(t)
	rules := serviceRules(prep.Plan.Services, prep.Plan.Pods)
	var vip string
	for _, s := range prep.Plan.Services {
		vip = s.Spec.ClusterIP
	}
	for _, want := range []string{"-A AMBIT-SERVICES -d " + vip + "/32 -p tcp -m tcp --dport 80 -j AMBIT-SVC-1",
		"--probability 0.25000 -j DNAT", "-A POSTROUTING -m conntrack --ctstate DNAT -j MASQUERADE", "COMMIT"} {
		if !strings.Contains(rules, want) {
			t.Errorf("rules lack %q:\n%s", want, rules)
		}
	}
	// 4 echo endpoints on each of the 3 ports (7070 and 9000 target themselves).
	if n := strings.Count(rules, "-j DNAT"); n != 12 {
		t.Errorf("%d DNAT rules, want 12:\n%s", n, rules)
	}
}
