// Package config reads the manifests users bring — Kubernetes core and apps
// objects, Gateway API routes and gateways, Istio traffic, security and
// extension resources — from YAML into the typed objects of the mesh model,
// and tells the user precisely what is wrong with them when they cannot be
// used.
//
// Parse decodes one multi-document YAML stream; Load reads files and
// directories into a model.Snapshot. Both apply the defaults Kubernetes would
// (namespace "default") and the validation the API server, the Gateway API
// CRD schemas and Istio's webhook would, and both report every problem at
// once as an ErrorList, each *Error naming the file, the document, the line,
// the object and the field:
//
//	routes.yaml: document 3: line 17: HTTPRoute default/reviews: spec.rules[0].backendRefs[1].weight: must be >= 0, got -1
//
// Users of the package are the control plane's file source (the directory
// `ambit up -f` and non-Kubernetes hosts run from) and the CLI's validation
// commands (`ambit analyze`-style checks, which want the errors and the valid
// objects together). Objects from the Kubernetes API are validated by the API
// server and do not come through here. Like internal/model, this package
// links the Kubernetes, Gateway API and Istio types, so the node proxy must
// not import it.
package config
