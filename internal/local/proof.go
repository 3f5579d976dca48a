//go:build linux

package local

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/ambit-mesh/ambit/internal/netns"
)

// proofRequests is how many requests the proof sends: enough for some to
// be answered on other nodes than the client's.
const proofRequests = 6

// Proof shows the mesh at work, one line per finding: requests from the
// first pod of a "client" Deployment (or a pod named client) to the first
// Service of its namespace, sent as the pod would (through its ztunnel),
// and which pods in which zones answered; then the identities the
// ztunnels that received them verified, from their metrics. It returns
// nothing when the manifests have no such pair.
func (c *Cluster) Proof(ctx context.Context) ([]string, error) {
	var client *corev1.Pod
	var clientNS *netns.NS
	for _, rt := range c.podList() {
		if p := rt.pod; p.Labels[labelOwner] == "client" || p.Name == "client" {
			client, clientNS = p, rt.ns
			break
		}
	}
	if client == nil {
		return nil, nil
	}
	prep := c.current()
	var svc *corev1.Service
	for _, s := range prep.Plan.Services {
		if s.Namespace == client.Namespace && s.Spec.ClusterIP != "" && s.Spec.ClusterIP != corev1.ClusterIPNone && len(s.Spec.Ports) > 0 {
			svc = s
			break
		}
	}
	if svc == nil {
		return nil, nil
	}
	zoneOf, nodeOf := map[string]string{}, map[string]string{}
	for _, n := range prep.Plan.Nodes {
		zoneOf[n.Name] = n.Zone
	}
	for _, p := range prep.Plan.Pods {
		nodeOf[p.Namespace+"/"+p.Name] = p.Spec.NodeName
	}
	url := fmt.Sprintf("http://%s:%d/", svc.Spec.ClusterIP, svc.Spec.Ports[0].Port)
	hc := &http.Client{Transport: &http.Transport{DialContext: netns.Dialer(clientNS, netns.SocketOptions{}), DisableKeepAlives: true},
		Timeout: 3 * time.Second}
	answered := map[string]int{}
	var peer string
	ok := 0
	var err error
	for attempt := 0; ok < proofRequests && attempt < 20+proofRequests && ctx.Err() == nil; attempt++ {
		var body []byte
		if body, err = get(hc, url); err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		ok++
		var ans struct{ Pod, Namespace, Peer string }
		if json.Unmarshal(body, &ans) == nil && ans.Pod != "" {
			node := nodeOf[ans.Namespace+"/"+ans.Pod]
			answered[fmt.Sprintf("%s (%s, %s)", ans.Pod, node, zoneOf[node])]++
			peer = ans.Peer
		}
	}
	if ok == 0 {
		return nil, fmt.Errorf("%s/%s → %s.%s (%s): %w", client.Namespace, client.Name, svc.Name, svc.Namespace, url, err)
	}
	var who []string
	for _, k := range slices.Sorted(mapKeys(answered)) {
		who = append(who, fmt.Sprintf("%s ×%d", k, answered[k]))
	}
	lines := []string{fmt.Sprintf("%d/%d requests %s (%s, %s, %s) → http://%s.%s:%d/ answered by %s; the server saw the caller as %s",
		ok, proofRequests, client.Name, client.Status.PodIP, client.Spec.NodeName, zoneOf[client.Spec.NodeName],
		svc.Name, svc.Namespace, svc.Spec.Ports[0].Port, strings.Join(who, ", "), peer)}
	for _, n := range prep.Plan.Nodes {
		metrics, err := c.ztunnelMetrics(n.Name)
		if err != nil {
			continue
		}
		for _, m := range verifiedPeers(metrics) {
			lines = append(lines, fmt.Sprintf("ztunnel on %s verified %s", n.Name, m))
		}
	}
	return lines, nil
}

func get(hc *http.Client, url string) ([]byte, error) {
	resp, err := hc.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode/100 != 2 {
		err = fmt.Errorf("HTTP %s", resp.Status)
	}
	return body, err
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// ztunnelMetrics reads the /metrics of node's ztunnel.
func (c *Cluster) ztunnelMetrics(node string) (string, error) {
	hc := &http.Client{Transport: &http.Transport{DialContext: netns.Dialer(c.nodeNS[node], netns.SocketOptions{}), DisableKeepAlives: true},
		Timeout: 2 * time.Second}
	b, err := get(hc, fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	return string(b), err
}

var (
	principalRE = regexp.MustCompile(`(source|destination)_principal="([^"]*)"`)
)

// verifiedPeers lists, from a ztunnel's metrics, the mutual-TLS connections
// it accepted: "SOURCE → DESTINATION (N connections)".
func verifiedPeers(metrics string) []string {
	counts := map[string]int{}
	for _, l := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(l, "istio_tcp_connections_opened_total{") || !strings.Contains(l, `reporter="destination"`) ||
			!strings.Contains(l, `connection_security_policy="mutual_tls"`) {
			continue
		}
		p := map[string]string{}
		for _, m := range principalRE.FindAllStringSubmatch(l, -1) {
			p[m[1]] = m[2]
		}
		var n int
		fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &n)
		counts[p["source"]+" → "+p["destination"]] += n
	}
	var out []string
	for _, k := range slices.Sorted(mapKeys(counts)) {
		out = append(out, fmt.Sprintf("%s (mTLS, %d connections)", k, counts[k]))
	}
	return out
}
