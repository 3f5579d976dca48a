package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/ambit-mesh/ambit/internal/config"
	"github.com/ambit-mesh/ambit/internal/model"
)

// Live changes: the cluster's supervisor serves a control socket
// (ControlSocket) where `ambit apply`, `ambit delete` and `ambit label`
// send changes as JSON over HTTP. The supervisor validates a change against
// the whole configuration, re-plans keeping what runs where it is, and then
// changes only what differs (see Cluster.reconfigure); on any error nothing
// changes and the error goes back to the command.

// ControlSocket is the control socket of cluster name.
func ControlSocket(name string) string { return filepath.Join(StateDir(name), "control.sock") }

// ManifestFile is one manifest file sent to the cluster, parsed there.
type ManifestFile struct {
	Name string `json:"name"`
	Data string `json:"data"`
}

// LabelChange sets and removes labels of a namespace or a pod.
type LabelChange struct {
	Kind      string            `json:"kind"` // "namespace" or "pod"
	Namespace string            `json:"namespace,omitempty"`
	Name      string            `json:"name"`
	Set       map[string]string `json:"set,omitempty"`
	Remove    []string          `json:"remove,omitempty"`
	Overwrite bool              `json:"overwrite,omitempty"`
}

// ControlRequest is a change: Files to apply, Refs to delete, or a Label change.
type ControlRequest struct {
	Files []ManifestFile `json:"files,omitempty"`
	Refs  []model.Ref    `json:"refs,omitempty"`
	Label *LabelChange   `json:"label,omitempty"`
}

type controlResponse struct {
	Lines []string `json:"lines,omitempty"`
	Error string   `json:"error,omitempty"`
}

// Control operations.
const (
	OpApply  = "apply"
	OpDelete = "delete"
	OpLabel  = "label"
)

// Control sends a change to cluster name and returns what it did, one line
// per object (kubectl-like: "Deployment demo/echo created").
func Control(ctx context.Context, name, op string, req ControlRequest) ([]string, error) {
	sock := ControlSocket(name)
	if _, err := os.Stat(sock); err != nil {
		if _, err := LoadState(name); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("cluster %q has no control socket (%s): is its supervisor running?", name, sock)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://cluster/"+op, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var r controlResponse
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("cluster %q answered %s: %s", name, resp.Status, strings.TrimSpace(string(b)))
	}
	if r.Error != "" {
		return r.Lines, errors.New(r.Error)
	}
	return r.Lines, nil
}

// describe names an object as the result lines do.
func describe(ref model.Ref) string {
	if ref.Namespace == "" {
		return string(ref.Kind) + " " + ref.Name
	}
	return string(ref.Kind) + " " + ref.Namespace + "/" + ref.Name
}

// withApplied is the configuration with files' objects created or replaced.
func (p *Prepared) withApplied(files []ManifestFile) (*Prepared, []string, error) {
	var objs []config.Object
	var errs []error
	for _, f := range files {
		o, err := config.Parse(f.Name, []byte(f.Data))
		if err != nil {
			errs = append(errs, err)
		}
		objs = append(objs, o...)
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	if len(objs) == 0 {
		return nil, nil, errors.New("no objects to apply")
	}
	next := slices.Clone(p.Objects)
	index := map[model.Ref]int{}
	for i, o := range next {
		index[o.Ref] = i
	}
	seen := map[model.Ref]model.Origin{}
	var lines []string
	for _, o := range objs {
		if first, dup := seen[o.Ref]; dup {
			return nil, nil, fmt.Errorf("%s: %s: already defined at %s", o.Origin, describe(o.Ref), first)
		}
		seen[o.Ref] = o.Origin
		i, ok := index[o.Ref]
		switch {
		case !ok:
			index[o.Ref] = len(next)
			next = append(next, o)
			lines = append(lines, describe(o.Ref)+" created")
		case reflect.DeepEqual(next[i].Obj, o.Obj):
			lines = append(lines, describe(o.Ref)+" unchanged")
		default:
			next[i] = o
			lines = append(lines, describe(o.Ref)+" configured")
		}
	}
	prep, err := prepare(p.Name, next, p.PodLabels, p.Plan)
	return prep, lines, err
}

// withDeleted is the configuration without refs; deleting a Namespace
// deletes the objects in it, as in Kubernetes.
func (p *Prepared) withDeleted(refs []model.Ref) (*Prepared, []string, error) {
	if len(refs) == 0 {
		return nil, nil, errors.New("no objects to delete")
	}
	gone := map[model.Ref]bool{}
	goneNS := map[string]bool{}
	for _, r := range refs {
		gone[r] = true
		if r.Kind == model.KindNamespace {
			goneNS[r.Name] = true
		}
	}
	found := map[model.Ref]bool{}
	var next []config.Object
	for _, o := range p.Objects {
		if gone[o.Ref] || (o.Ref.Namespace != "" && goneNS[o.Ref.Namespace]) {
			found[o.Ref] = true
			continue
		}
		next = append(next, o)
	}
	var lines []string
	for _, r := range refs {
		if found[r] {
			lines = append(lines, describe(r)+" deleted")
		} else {
			lines = append(lines, describe(r)+" not found")
		}
	}
	prep, err := prepare(p.Name, next, p.PodLabels, p.Plan)
	return prep, lines, err
}

// withLabels is the configuration with a namespace's or a pod's labels
// changed. A namespace no manifest defines is created, as the namespaces
// objects name exist implicitly in the local cluster.
func (p *Prepared) withLabels(ch LabelChange) (*Prepared, []string, error) {
	for k, v := range ch.Set {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return nil, nil, fmt.Errorf("label key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return nil, nil, fmt.Errorf("label %s value %q: %s", k, v, strings.Join(errs, "; "))
		}
	}
	apply := func(what string, labels map[string]string) (map[string]string, string, error) {
		out := map[string]string{}
		for k, v := range labels {
			out[k] = v
		}
		changed := false
		for k, v := range ch.Set {
			if old, ok := out[k]; ok && old != v && !ch.Overwrite {
				return nil, "", fmt.Errorf("%s already has a value (%s) for label %s: use --overwrite to change it", what, old, k)
			}
			changed = changed || out[k] != v
			out[k] = v
		}
		for _, k := range ch.Remove {
			if _, ok := out[k]; ok {
				changed = true
				delete(out, k)
			}
		}
		if !changed {
			return out, what + " not labeled", nil
		}
		return out, what + " labeled", nil
	}
	switch ch.Kind {
	case "namespace", "namespaces", "ns":
		ref := model.Ref{Kind: model.KindNamespace, Name: ch.Name}
		next := slices.Clone(p.Objects)
		i := slices.IndexFunc(next, func(o config.Object) bool { return o.Ref == ref })
		ns := &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: ch.Name}}
		if i >= 0 {
			ns = next[i].Obj.(*corev1.Namespace).DeepCopy()
		} else if !p.hasNamespace(ch.Name) {
			return nil, nil, fmt.Errorf("namespace %q not found: no object of the cluster is in it", ch.Name)
		}
		labels, line, err := apply("namespace "+ch.Name, ns.Labels)
		if err != nil {
			return nil, nil, err
		}
		ns.Labels = labels
		o := config.Object{Obj: ns, Ref: ref, Origin: model.Origin{File: "ambit label"}}
		if i >= 0 {
			o.Origin, o.Line = next[i].Origin, next[i].Line
			next[i] = o
		} else {
			next = append(next, o)
		}
		prep, err := prepare(p.Name, next, p.PodLabels, p.Plan)
		return prep, []string{line}, err
	case "pod", "pods", "po":
		var pod *corev1.Pod
		for _, q := range p.Plan.Pods {
			if q.Name == ch.Name && (ch.Namespace == "" || q.Namespace == ch.Namespace) {
				if pod != nil {
					return nil, nil, fmt.Errorf("pod %s exists in several namespaces: use -n", ch.Name)
				}
				pod = q
			}
		}
		if pod == nil {
			return nil, nil, fmt.Errorf("pod %q not found", ch.Name)
		}
		labels, line, err := apply("pod "+pod.Namespace+"/"+pod.Name, pod.Labels)
		if err != nil {
			return nil, nil, err
		}
		key := model.Key{Namespace: pod.Namespace, Name: pod.Name}
		over := map[model.Key]map[string]*string{}
		for k, v := range p.PodLabels {
			over[k] = v
		}
		m := map[string]*string{}
		for k, v := range over[key] {
			m[k] = v
		}
		for k, v := range ch.Set {
			m[k] = &v
		}
		for _, k := range ch.Remove {
			if _, ok := labels[k]; !ok {
				m[k] = nil
			}
		}
		over[key] = m
		prep, err := prepare(p.Name, p.Objects, over, p.Plan)
		return prep, []string{line}, err
	}
	return nil, nil, fmt.Errorf("cannot label %q: only namespace and pod", ch.Kind)
}

// hasNamespace reports whether any planned object lives in namespace ns.
func (p *Prepared) hasNamespace(ns string) bool {
	for ref := range p.Snapshot.Origins {
		if ref.Namespace == ns {
			return true
		}
	}
	return false
}
