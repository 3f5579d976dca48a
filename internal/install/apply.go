package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ambit-mesh/ambit/internal/kube"
)

// Install applies objs (Render's output) with server-side apply, reporting
// progress to w: CRDs first, waiting until the API server serves them,
// then the rest in order. With dryRun the API server validates and admits
// every object without storing any; objects of a namespace that does not
// exist yet are checked in "default" (a dry run creates no namespace).
func Install(ctx context.Context, cl *kube.Clients, objs []*unstructured.Unstructured, dryRun bool, w io.Writer) error {
	a := cl.NewApplier("ambit-install")
	missingNS := map[string]bool{}
	for _, o := range objs {
		if o.GetKind() != "Namespace" {
			continue
		}
		if _, err := cl.Kube.CoreV1().Namespaces().Get(ctx, o.GetName(), metav1.GetOptions{}); apierrors.IsNotFound(err) {
			missingNS[o.GetName()] = true
		}
	}
	crds := 0
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			crds++
		}
	}
	if crds > 0 {
		step := time.Now()
		for _, o := range objs {
			if o.GetKind() == "CustomResourceDefinition" {
				if _, err := a.Apply(ctx, o, dryRun); err != nil {
					return err
				}
			}
		}
		if !dryRun {
			if err := waitCRDs(ctx, cl, objs); err != nil {
				return err
			}
		}
		fmt.Fprintf(w, "✔ %d CustomResourceDefinitions (Gateway API, Istio)%s %s\n", crds, dryRunNote(dryRun), since(step))
	}
	step := time.Now()
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			continue
		}
		obj := o
		if dryRun && missingNS[o.GetNamespace()] {
			obj = o.DeepCopy()
			obj.SetNamespace("default")
		}
		if _, err := a.Apply(ctx, obj, dryRun); err != nil {
			if dryRun && meta404(err) {
				// A custom resource whose CRD a dry run did not create.
				fmt.Fprintf(w, "  (skipped %s %s: its CRD is not installed yet)\n", o.GetKind(), o.GetName())
				continue
			}
			return err
		}
		fmt.Fprintf(w, "  %s %s%s\n", o.GetKind(), describe(o), dryRunNote(dryRun))
	}
	fmt.Fprintf(w, "✔ %d objects applied%s %s\n", len(objs)-crds, dryRunNote(dryRun), since(step))
	return nil
}

func meta404(err error) bool {
	return strings.Contains(err.Error(), "no matches for kind")
}

func dryRunNote(dryRun bool) string {
	if dryRun {
		return " (server dry run)"
	}
	return ""
}

func since(t time.Time) string { return time.Since(t).Round(time.Millisecond).String() }

func describe(o *unstructured.Unstructured) string {
	if o.GetNamespace() == "" {
		return o.GetName()
	}
	return o.GetNamespace() + "/" + o.GetName()
}

// waitCRDs waits until the API server reports every CRD Established.
func waitCRDs(ctx context.Context, cl *kube.Clients, objs []*unstructured.Unstructured) error {
	a := cl.NewApplier("ambit-install")
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		r, err := a.Resource(o)
		if err != nil {
			return err
		}
		for {
			cur, err := r.Get(ctx, o.GetName(), metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("CRD %s: %w", o.GetName(), err)
			}
			conds, _, _ := unstructured.NestedSlice(cur.Object, "status", "conditions")
			if slices.ContainsFunc(conds, func(c any) bool {
				m, _ := c.(map[string]any)
				return m["type"] == "Established" && m["status"] == "True"
			}) {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("CRD %s not established: %w", o.GetName(), ctx.Err())
			case <-time.After(200 * time.Millisecond): // polling the API server's progress
			}
		}
	}
	return nil
}

// WaitReady waits until the control plane Deployment has an available
// replica and every node DaemonSet pod is ready, reporting progress.
func WaitReady(ctx context.Context, cl *kube.Clients, o Options, w io.Writer) error {
	step := time.Now()
	ns := o.Namespace
	var last string
	for {
		var waiting []string
		d, err := cl.Kube.AppsV1().Deployments(ns).Get(ctx, ControlPlaneName, metav1.GetOptions{})
		switch {
		case err != nil:
			waiting = append(waiting, "control plane: "+err.Error())
		case d.Status.AvailableReplicas < 1:
			waiting = append(waiting, fmt.Sprintf("control plane: %d/%d available", d.Status.AvailableReplicas, *d.Spec.Replicas))
		}
		for _, name := range []string{ZtunnelName, NodeAgentName} {
			ds, err := cl.Kube.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
			switch {
			case err != nil:
				waiting = append(waiting, name+": "+err.Error())
			case ds.Status.DesiredNumberScheduled == 0 || ds.Status.NumberReady < ds.Status.DesiredNumberScheduled:
				waiting = append(waiting, fmt.Sprintf("%s: %d/%d nodes ready", name, ds.Status.NumberReady, ds.Status.DesiredNumberScheduled))
			}
		}
		if len(waiting) == 0 {
			fmt.Fprintf(w, "✔ control plane and node agents ready %s\n", since(step))
			return nil
		}
		if s := strings.Join(waiting, "; "); s != last {
			fmt.Fprintf(w, "  waiting: %s\n", s)
			last = s
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %s: %w", strings.Join(waiting, "; "), ctx.Err())
		case <-time.After(time.Second): // polling rollout progress
		}
	}
}

// Uninstall deletes what Install created, in reverse order. CRDs (and so
// users' Gateways, routes and policies) and the namespace with the CA
// Secret stay unless purge: a reinstall keeps the mesh's identities.
func Uninstall(ctx context.Context, cl *kube.Clients, objs []*unstructured.Unstructured, purge bool, w io.Writer) error {
	a := cl.NewApplier("ambit-install")
	var errs []error
	for _, o := range slices.Backward(objs) {
		switch o.GetKind() {
		case "CustomResourceDefinition", "Namespace":
			if !purge {
				continue
			}
		}
		if err := a.Delete(ctx, o); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(w, "  deleted %s %s\n", o.GetKind(), describe(o))
	}
	if !purge {
		fmt.Fprintf(w, "kept the CRDs and namespace %s (CA Secret); --purge removes them\n", firstNamespace(objs))
	}
	return errors.Join(errs...)
}

func firstNamespace(objs []*unstructured.Unstructured) string {
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			return o.GetName()
		}
	}
	return ""
}
