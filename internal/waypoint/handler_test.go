package waypoint

import (
	"net/http"
	"reflect"
	"testing"
)

func TestHopHeaders(t *testing.T) {
	tests := []struct {
		name    string
		in      http.Header
		forward http.Header
	}{
		{"none", http.Header{"Accept": {"*/*"}, "Content-Length": {"3"}},
			http.Header{"Accept": {"*/*"}, "Content-Length": {"3"}}},
		{"every hop field",
			http.Header{"Connection": {"keep-alive"}, "Proxy-Connection": {"x"}, "Keep-Alive": {"timeout=5"}, "Proxy-Authenticate": {"x"},
				"Proxy-Authorization": {"x"}, "Trailer": {"X"}, "Transfer-Encoding": {"chunked"}, "Upgrade": {"websocket"}, "Accept": {"*/*"}},
			http.Header{"Accept": {"*/*"}}},
		{"named by Connection", http.Header{"Connection": {"x-a, , X-B", "x-c"}, "X-A": {"1"}, "X-B": {"2"}, "X-C": {"3"}, "X-D": {"4"}},
			http.Header{"X-D": {"4"}}},
		{"TE: trailers kept", http.Header{"Te": {"Trailers"}}, http.Header{"Te": {"Trailers"}}},
		{"TE: anything else dropped", http.Header{"Te": {"gzip"}}, http.Header{}},
		{"TE twice dropped", http.Header{"Te": {"trailers", "trailers"}}, http.Header{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in.Clone()
			removeHopHeaders(in)
			if !reflect.DeepEqual(in, tt.forward) {
				t.Errorf("removeHopHeaders: %v, want %v", in, tt.forward)
			}
			out := http.Header{}
			copyEndToEnd(out, tt.in)
			if !reflect.DeepEqual(out, tt.forward) {
				t.Errorf("copyEndToEnd: %v, want %v", out, tt.forward)
			}
		})
	}
}
