package ca

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
)

func TestNodeToken(t *testing.T) {
	c := newMemCA(t, nil)
	other := newMemCA(t, nil)
	auth := c.TokenAuthenticator()
	tokA := c.NodeToken("node-a")

	tests := []struct {
		name     string
		md       metadata.MD // nil = no metadata at all
		wantNode string
		wantErr  string
	}{
		{name: "valid", md: metadata.Pairs("authorization", "Bearer "+tokA), wantNode: "node-a"},
		{name: "scheme is case-insensitive", md: metadata.Pairs("authorization", "bearer "+tokA), wantNode: "node-a"},
		{name: "other node's token names that node", md: metadata.Pairs("authorization", "Bearer "+c.NodeToken("node-b")), wantNode: "node-b"},
		{name: "no metadata", wantErr: "no request metadata"},
		{name: "missing header", md: metadata.Pairs("x-other", "1"), wantErr: "missing authorization"},
		{name: "two headers", md: metadata.Pairs("authorization", "Bearer "+tokA, "authorization", "Bearer "+tokA), wantErr: "exactly one"},
		{name: "basic auth", md: metadata.Pairs("authorization", "Basic "+tokA), wantErr: "Bearer <token>"},
		{name: "empty token", md: metadata.Pairs("authorization", "Bearer  "), wantErr: "Bearer <token>"},
		{name: "no dot", md: metadata.Pairs("authorization", "Bearer abc"), wantErr: "malformed"},
		{name: "bad base64", md: metadata.Pairs("authorization", "Bearer !!.!!"), wantErr: "malformed"},
		{name: "forged by another CA", md: metadata.Pairs("authorization", "Bearer "+other.NodeToken("node-a")), wantErr: "invalid signature"},
		{name: "node part swapped", md: metadata.Pairs("authorization", "Bearer "+swapNode(c.NodeToken("node-b"), tokA)), wantErr: "invalid signature"},
		{name: "truncated MAC", md: metadata.Pairs("authorization", "Bearer "+tokA[:len(tokA)-4]), wantErr: "invalid signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.md != nil {
				ctx = metadata.NewIncomingContext(ctx, tt.md)
			}
			node, err := auth.Authenticate(ctx)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), tokA) {
					t.Error("error message leaks the token")
				}
				return
			}
			if err != nil || node != tt.wantNode {
				t.Fatalf("Authenticate = %q, %v; want %q", node, err, tt.wantNode)
			}
		})
	}

	if _, err := NewTokenAuthenticator([]byte("short")); err == nil {
		t.Error("short key accepted")
	}
	if _, err := auth.Verify(c.NodeToken("")); err == nil {
		t.Error("token for empty node accepted")
	}
}

// swapNode puts node part of a in front of the MAC of b.
func swapNode(a, b string) string {
	na, _, _ := strings.Cut(a, ".")
	_, mb, _ := strings.Cut(b, ".")
	return na + "." + mb
}
