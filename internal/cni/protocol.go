// Package cni is Ambit's chained CNI plugin and its link to the node
// agent: the plugin (cmd/ambit-cni, spec 1.0) passes every pod's ADD, DEL
// and CHECK to the node agent over a Unix socket and returns the previous
// plugin's result unchanged; the node agent decides whether the pod is in
// the ambient mesh and, when it is, enrols it — redirection rules in the
// pod's network namespace, the namespace handed to the ztunnel — before
// answering, so a pod never starts unprotected. Install puts the plugin
// into the node's CNI configuration chain.
//
// The plugin binary links this package only: it must stay small and start
// fast (no Kubernetes client). The node agent (internal/nodeagent) serves
// the other end.
package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// DefaultSocket is where the node agent listens for the plugin.
const DefaultSocket = "/var/run/ambit/cni.sock"

// Commands the plugin forwards.
const (
	CmdAdd   = "ADD"
	CmdDel   = "DEL"
	CmdCheck = "CHECK"
)

// Request is one CNI call, as the node agent sees it.
type Request struct {
	Command      string   `json:"command"`
	ContainerID  string   `json:"containerID"`
	Netns        string   `json:"netns,omitempty"`
	IfName       string   `json:"ifName,omitempty"`
	PodName      string   `json:"podName"`
	PodNamespace string   `json:"podNamespace"`
	PodUID       string   `json:"podUID,omitempty"`
	IPs          []string `json:"ips,omitempty"` // from the previous plugin's result
}

// Response is the node agent's answer. A failure is an HTTP error status
// with the message as body, never a Response.
type Response struct {
	// Enrolled: the pod is in the mesh (ADD: now enrolled and acknowledged
	// by the ztunnel; CHECK: still enrolled).
	Enrolled bool   `json:"enrolled"`
	Message  string `json:"message,omitempty"`
}

// Client talks to the node agent.
type Client struct {
	Socket string
	hc     *http.Client
}

// NewClient returns a client of the node agent at socket.
func NewClient(socket string) *Client {
	return &Client{Socket: socket, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}}
}

// Do sends req and waits for the node agent's answer.
func (c *Client) Do(ctx context.Context, req Request) (Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return Response{}, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://ambit-node-agent/v1/cni", bytes.NewReader(body))
	if err != nil {
		return Response{}, err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(hr)
	if err != nil {
		return Response{}, fmt.Errorf("node agent at %s: %w", c.Socket, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return Response{}, fmt.Errorf("node agent at %s: %w", c.Socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		return Response{}, fmt.Errorf("node agent: %s", bytes.TrimSpace(b))
	}
	var out Response
	if err := json.Unmarshal(b, &out); err != nil {
		return Response{}, fmt.Errorf("node agent at %s: bad answer: %w", c.Socket, err)
	}
	return out, nil
}

// Handler is the node agent's side.
type Handler interface {
	HandleCNI(ctx context.Context, req Request) (Response, error)
}

// Serve answers the plugin's requests on l until ctx ends.
func Serve(ctx context.Context, l net.Listener, h Handler) error {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/cni", func(w http.ResponseWriter, r *http.Request) {
		var req Request
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := req.validate(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp, err := h.HandleCNI(r.Context(), req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(resp)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (r *Request) validate() error {
	switch r.Command {
	case CmdAdd, CmdDel, CmdCheck:
	default:
		return fmt.Errorf("unknown command %q", r.Command)
	}
	if r.PodName == "" || r.PodNamespace == "" {
		return errors.New("request names no pod (K8S_POD_NAME and K8S_POD_NAMESPACE are required)")
	}
	if r.Command == CmdAdd && r.Netns == "" {
		return fmt.Errorf("ADD for pod %s/%s without a network namespace", r.PodNamespace, r.PodName)
	}
	return nil
}
