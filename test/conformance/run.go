package conformance

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	echov1 "github.com/ambit-mesh/ambit/api/echo/v1"
	"github.com/ambit-mesh/ambit/internal/echo"
)

// Harness is a mesh running the suite's base manifests (manifests.yaml)
// with `ambit app echo` as the backends and a waypoint bound to MeshNS.
type Harness interface {
	// Apply applies the suite's manifest file until t ends, returning once
	// the waypoint applies it.
	Apply(t *testing.T, file string)
	// HTTP sends c from its client pod and returns the answer: the echo's
	// description of the request when a backend answered.
	HTTP(t *testing.T, c Case) (status int, h http.Header, e echo.Response)
	// GRPC is a client of the Echo service at target ("echo:7070") from
	// the client pod of MeshNS.
	GRPC(t *testing.T, target string) echov1.EchoClient
}

// Run runs every case of CASES.md on h, a subtest per conformance test.
func Run(t *testing.T, h Harness) {
	for _, s := range HTTPSuites {
		t.Run(s.Name, func(t *testing.T) {
			if s.File != "" {
				h.Apply(t, s.File)
			}
			for _, c := range s.Cases {
				status, hdr, e := h.HTTP(t, c)
				if err := c.Check(status, hdr, e); err != nil {
					t.Errorf("%s%s from %s: %v", c.Host, c.Path, c.From, err)
				}
			}
		})
	}
	for _, w := range WeightSuites {
		t.Run(w.Name, func(t *testing.T) {
			h.Apply(t, w.File)
			send := func() (string, error) {
				status, _, e := h.HTTP(t, Case{Path: "/"})
				if status != http.StatusOK {
					return "", fmt.Errorf("GET http://echo/: status %d", status)
				}
				return e.Pod, nil
			}
			if w.Protocol == "grpc" {
				ec := h.GRPC(t, "echo:7070")
				send = func() (string, error) {
					ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
					defer cancel()
					resp, err := ec.Echo(ctx, &echov1.EchoRequest{Message: "w"})
					return resp.GetPod(), err
				}
			}
			counts, err := Weigh(w.Want, send)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("distribution over %d requests: %v", WeightRequests, counts)
		})
	}
	t.Run("MeshGRPCRouteRequestHeaderModifier", func(t *testing.T) {
		h.Apply(t, GRPCHeaderFile)
		ec := h.GRPC(t, "echo:7070")
		for _, g := range GRPCHeaderCases {
			ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(t.Context(), g.MD...), 10*time.Second)
			resp, err := ec.Echo(ctx, &echov1.EchoRequest{Message: "h"})
			cancel()
			if err != nil {
				t.Fatalf("%s: %v", g.Name(), err)
			}
			if err := g.Check(resp.GetPod(), resp.GetMetadata()); err != nil {
				t.Errorf("%s: %v", g.Name(), err)
			}
		}
	})
}
