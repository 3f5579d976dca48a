package kubetest

import (
	"cmp"
	"context"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ambit-mesh/ambit/internal/install"
	"github.com/ambit-mesh/ambit/internal/kube"
)

// Clients returns API clients acting as the administrator.
func (c *Cluster) Clients(t testing.TB) *kube.Clients {
	t.Helper()
	cl, err := kube.NewClients(c.Config, "kubetest")
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// InstallCRDs applies the Gateway API and Istio CRDs Ambit embeds and waits
// until the API server serves every one of them.
func (c *Cluster) InstallCRDs(t testing.TB) {
	t.Helper()
	crds, err := install.CRDs()
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Clients(t)
	a := cl.NewApplier("kubetest")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, crd := range crds {
		if _, err := a.Apply(ctx, crd, false); err != nil {
			t.Fatal(err)
		}
	}
	for _, crd := range crds {
		group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
		plural, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
		versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		for _, v := range versions {
			name, _, _ := unstructured.NestedString(v.(map[string]any), "name")
			served, _, _ := unstructured.NestedBool(v.(map[string]any), "served")
			if !served {
				continue
			}
			Eventually(t, 2*time.Minute, "CRD "+crd.GetName()+" served", func() bool {
				list, err := cl.Kube.Discovery().ServerResourcesForGroupVersion(group + "/" + name)
				if err != nil {
					return false
				}
				for _, r := range list.APIResources {
					if r.Name == plural {
						return true
					}
				}
				return false
			})
		}
	}
}

// Apply creates or updates typed objects (TypeMeta set) with server-side
// apply, then their status where they carry one the test sets (Pods), as
// the kubelet would.
func Apply(t testing.TB, cl *kube.Clients, objs ...any) {
	t.Helper()
	a := cl.NewApplier("kubetest")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	us := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		u, err := kube.ToUnstructured(o)
		if err != nil {
			t.Fatal(err)
		}
		us = append(us, u)
	}
	// Namespaces first, as kubectl does, so the rest has somewhere to go.
	slices.SortStableFunc(us, func(a, b *unstructured.Unstructured) int {
		first := func(u *unstructured.Unstructured) int {
			if u.GetKind() == "Namespace" {
				return 0
			}
			return 1
		}
		return cmp.Compare(first(a), first(b))
	})
	for _, u := range us {
		status, hasStatus := u.Object["status"]
		if _, err := a.Apply(ctx, u, false); err != nil {
			t.Fatal(err)
		}
		if hasStatus && u.GetKind() == "Pod" {
			s := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(),
				"metadata": map[string]any{"name": u.GetName(), "namespace": u.GetNamespace()},
				"status":   status,
			}}
			if _, err := a.ApplyStatus(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// Eventually polls cond until it holds or the bound (a failure bound, not
// a synchronisation) passes.
func Eventually(t testing.TB, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", bound, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
