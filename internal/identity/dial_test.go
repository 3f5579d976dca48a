package identity

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestDialControlPlaneNeedsRoots(t *testing.T) {
	_, _, err := DialControlPlane("127.0.0.1:1", filepath.Join(t.TempDir(), "missing.pem"), "cluster.local", "token")
	if err == nil || !strings.Contains(err.Error(), "mesh roots") {
		t.Fatalf("error %v, want one about the mesh roots", err)
	}
}
