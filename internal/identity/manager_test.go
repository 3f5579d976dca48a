package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ambit-mesh/ambit/internal/ca"
)

func TestFirstIssuance(t *testing.T) {
	h := newHarness(t, nil)
	m := h.manager(t, nil, Options{Bundle: h.cpBundle})

	// Many handshakes ask at once: one CA call serves them all.
	var wg sync.WaitGroup
	certs := make([]any, 10)
	for i := range certs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cert, err := m.Certificate(ctxTimeout(t, 5*time.Second), echoID)
			if err != nil {
				t.Error(err)
				return
			}
			certs[i] = cert
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, c := range certs[1:] {
		if c != certs[0] {
			t.Fatal("concurrent callers got different certificates")
		}
	}
	if n := h.client.calls.Load(); n != 1 {
		t.Errorf("%d CA calls, want 1", n)
	}

	cert, _ := m.Certificate(ctxTimeout(t, time.Second), echoID)
	leaf := cert.Leaf
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != echoID.String() {
		t.Errorf("URI SANs = %v", leaf.URIs)
	}
	id, err := m.VerifyPeer([]*x509.Certificate{leaf}, x509.ExtKeyUsageClientAuth)
	if err != nil || id != echoID {
		t.Errorf("own certificate does not verify against the manager's roots: %v, %v", id, err)
	}
	if b := m.Bundle().Certificates(); len(b) != 1 || !b[0].Equal(h.ca.SigningCertificate()) {
		t.Errorf("bundle = %d roots, want the CA root", len(b))
	}
	st := m.Status()
	if len(st) != 1 || st[0].ID != echoID || !st[0].NotAfter.Equal(leaf.NotAfter) || st[0].LastError != nil {
		t.Errorf("Status = %+v", st)
	}
	// The lifetime is the CA default (1h here): the renewal is half of it away.
	if d := time.Until(st[0].RenewAt); d < 29*time.Minute || d > 31*time.Minute {
		t.Errorf("renewal in %s, want ~30m", d)
	}
}

func TestRenewal(t *testing.T) {
	for _, tt := range []struct {
		fraction float64
		ttl      time.Duration
		want     time.Duration
	}{
		{fraction: 0, ttl: 2 * time.Hour, want: time.Hour}, // default: half-life
		{fraction: 0.8, ttl: time.Hour, want: 48 * time.Minute},
		{fraction: 0.5, ttl: 2 * time.Second, want: time.Second}, // short TTL: the 1-minute backdate must not count
	} {
		t.Run(tt.want.String(), func(t *testing.T) {
			clk := newFakeClock()
			h := newHarness(t, clk)
			m := h.manager(t, clk, Options{TTL: tt.ttl, RenewFraction: tt.fraction})
			first, err := m.Certificate(ctxTimeout(t, 5*time.Second), echoID)
			if err != nil {
				t.Fatal(err)
			}
			if got := waitScheduled(t, clk, 1)[0]; got != tt.want {
				t.Fatalf("renewal scheduled in %s, want %s", got, tt.want)
			}
			clk.Advance(tt.want - time.Millisecond)
			if clk.Pending() != 1 || h.client.calls.Load() != 1 {
				t.Fatal("renewed before its time")
			}
			clk.Advance(time.Millisecond)
			s := waitScheduled(t, clk, 2)
			if s[1] != tt.want {
				t.Errorf("next renewal in %s, want %s", s[1], tt.want)
			}
			second, err := m.Certificate(ctxTimeout(t, time.Second), echoID)
			if err != nil {
				t.Fatal(err)
			}
			if second == first || second.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
				t.Fatal("certificate not renewed")
			}
			if first.Leaf.PublicKey.(*ecdsa.PublicKey).Equal(second.Leaf.PublicKey) {
				t.Error("renewal reused the key")
			}
		})
	}
}

func TestCAUnavailable(t *testing.T) {
	clk := newFakeClock()
	h := newHarness(t, clk)
	const initial, maxB = time.Second, 8 * time.Second
	m := h.manager(t, clk, Options{TTL: time.Hour, InitialBackoff: initial, MaxBackoff: maxB})
	first, err := m.Certificate(ctxTimeout(t, 5*time.Second), echoID)
	if err != nil {
		t.Fatal(err)
	}
	waitScheduled(t, clk, 1)

	h.client.down.Store(true)
	clk.Advance(30 * time.Minute) // renewal time: fails
	n := 2                        // attempts made so far = timers scheduled
	for failure := 1; failure <= 6; failure++ {
		s := waitScheduled(t, clk, n)
		d := s[n-1]
		want := min(initial<<(failure-1), maxB)
		if d < want/2 || d > want {
			t.Errorf("backoff after failure %d = %s, want in [%s, %s]", failure, d, want/2, want)
		}
		// Meanwhile the old certificate keeps being served.
		got, err := m.Certificate(ctxTimeout(t, time.Second), echoID)
		if err != nil || got != first {
			t.Fatalf("during the outage: %v, same cert %v", err, got == first)
		}
		st := m.Status()[0]
		if st.Failures != failure || status.Code(st.LastError) != codes.Unavailable {
			t.Errorf("Status = %+v", st)
		}
		if failure < 6 {
			clk.Advance(d) // the next attempt; only one is ever in flight
			n++
		}
	}

	// The certificate expires while the CA is still down: no certificate now.
	clk.Advance(time.Hour)
	n++
	waitScheduled(t, clk, n)
	_, err = m.Certificate(ctxTimeout(t, 50*time.Millisecond), echoID)
	if err == nil || !strings.Contains(err.Error(), "CA down") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("after expiry: err = %v, want deadline exceeded naming the last failure", err)
	}

	// The CA returns: the next attempt recovers.
	h.client.down.Store(false)
	clk.Advance(maxB)
	waitScheduled(t, clk, n+1)
	got, err := m.Certificate(ctxTimeout(t, time.Second), echoID)
	if err != nil || got == first {
		t.Fatalf("after recovery: %v", err)
	}
	if st := m.Status()[0]; st.Failures != 0 || st.LastError != nil {
		t.Errorf("Status after recovery = %+v", st)
	}
	// (X.509 times have whole seconds, so the lifetime may be a little short.)
	if s := clk.Scheduled(); s[len(s)-1] > 30*time.Minute || s[len(s)-1] < 30*time.Minute-time.Second {
		t.Errorf("after recovery the next renewal is in %s, want half-life", s[len(s)-1])
	}
}

// TestCARestart stops the real gRPC server and starts it again on the same
// address.
func TestCARestart(t *testing.T) {
	clk := newFakeClock()
	h := newHarness(t, clk)
	m := h.manager(t, clk, Options{TTL: time.Hour, InitialBackoff: time.Second, MaxBackoff: 4 * time.Second})
	first, err := m.Certificate(ctxTimeout(t, 5*time.Second), echoID)
	if err != nil {
		t.Fatal(err)
	}
	waitScheduled(t, clk, 1)
	h.gs.Stop()
	clk.Advance(30 * time.Minute)
	waitScheduled(t, clk, 2)
	if st := m.Status()[0]; st.Failures != 1 || status.Code(st.LastError) != codes.Unavailable {
		t.Fatalf("Status with the CA stopped = %+v", st)
	}
	if got, _ := m.Certificate(ctxTimeout(t, time.Second), echoID); got != first {
		t.Fatal("old certificate not served while the CA is down")
	}

	h.restart(t)
	// gRPC reconnects on its own schedule (real time); keep stepping the
	// manager's backoff until an attempt gets through.
	deadline := time.Now().Add(5 * time.Second)
	for n := 3; ; n++ {
		clk.Advance(4 * time.Second)
		waitScheduled(t, clk, n)
		if m.Status()[0].Failures == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after the CA restarted: %+v", m.Status()[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got, _ := m.Certificate(ctxTimeout(t, time.Second), echoID); got == first {
		t.Fatal("certificate not renewed after the CA came back")
	}
}

func TestRootRotation(t *testing.T) {
	clk := newFakeClock()
	h := newHarness(t, clk)
	m := h.manager(t, clk, Options{TTL: time.Hour})
	if _, err := m.Certificate(ctxTimeout(t, 5*time.Second), echoID); err != nil {
		t.Fatal(err)
	}
	waitScheduled(t, clk, 1)
	if len(m.Bundle().Certificates()) != 1 {
		t.Fatal("want one root before the rotation")
	}
	changed := m.Bundle().Changed()

	// The operator introduces a new root next to the old one.
	newRoot, err := ca.New(ca.Options{TrustDomain: td, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	rootsDir := filepath.Join(h.caDir, ca.ExtraRootsDir)
	os.MkdirAll(rootsDir, 0o700)
	os.WriteFile(filepath.Join(rootsDir, "new.pem"), []byte(newRoot.TrustBundlePEM()[0]), 0o600)
	if err := h.ca.ReloadTrustBundle(); err != nil {
		t.Fatal(err)
	}

	clk.Advance(30 * time.Minute) // next renewal carries the new bundle
	waitScheduled(t, clk, 2)
	select {
	case <-changed:
	default:
		t.Fatal("bundle change not signalled")
	}
	if b := m.Bundle().Certificates(); len(b) != 2 {
		t.Fatalf("bundle has %d roots, want old and new", len(b))
	}
	// Peers whose certificates come from either root are now accepted.
	fromNew := issueFrom(t, newRoot, sleepID)
	if id, err := m.VerifyPeer(fromNew, x509.ExtKeyUsageClientAuth); err != nil || id != sleepID {
		t.Errorf("peer from the new root: %v, %v", id, err)
	}
	own, _ := m.Certificate(ctxTimeout(t, time.Second), echoID)
	if _, err := m.VerifyPeer([]*x509.Certificate{own.Leaf}, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("peer from the old root: %v", err)
	}

	// The old root's retirement is not in scope here, but dropping the extra
	// root again shrinks the bundle at the next renewal.
	os.Remove(filepath.Join(rootsDir, "new.pem"))
	h.ca.ReloadTrustBundle()
	clk.Advance(30 * time.Minute)
	waitScheduled(t, clk, 3)
	if b := m.Bundle().Certificates(); len(b) != 1 {
		t.Fatalf("bundle has %d roots after removal, want 1", len(b))
	}
	if _, err := m.VerifyPeer(fromNew, x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("peer from the removed root still accepted")
	}
}

func TestRefusedIdentity(t *testing.T) {
	h := newHarness(t, nil)
	m := h.manager(t, nil, Options{Bundle: h.cpBundle})
	start := time.Now()
	_, err := m.Certificate(ctxTimeout(t, 10*time.Second), otherID)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("err = %v, want PermissionDenied", err)
	}
	want := "node node-a may not obtain spiffe://cluster.local/ns/default/sa/other: no pod with that identity runs on node-a"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not explain the refusal", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Error("a refusal should be returned at once, not after the context deadline")
	}
	// Other identities are unaffected.
	if _, err := m.Certificate(ctxTimeout(t, 5*time.Second), echoID); err != nil {
		t.Fatal(err)
	}
}

func TestForgetAndClose(t *testing.T) {
	clk := newFakeClock()
	h := newHarness(t, clk)
	m := h.manager(t, clk, Options{TTL: time.Hour})
	first, err := m.Certificate(ctxTimeout(t, 5*time.Second), echoID)
	if err != nil {
		t.Fatal(err)
	}
	waitScheduled(t, clk, 1)
	m.Forget(echoID)
	if clk.Pending() != 0 || len(m.Status()) != 0 {
		t.Fatal("Forget left the renewal scheduled")
	}
	again, err := m.Certificate(ctxTimeout(t, 5*time.Second), echoID)
	if err != nil || again == first || h.client.calls.Load() != 2 {
		t.Fatalf("after Forget a fresh certificate should be fetched: %v", err)
	}

	m.Prefetch(sleepID)
	waitScheduled(t, clk, 3)
	if len(m.Status()) != 2 {
		t.Fatalf("Prefetch did not fetch: %+v", m.Status())
	}
	m.Close()
	if clk.Pending() != 0 {
		t.Error("Close left renewals scheduled")
	}
	if _, err := m.Certificate(ctxTimeout(t, time.Second), echoID); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("after Close: %v", err)
	}
}

func TestBackoff(t *testing.T) {
	m, _ := NewManager(Options{Client: &switchClient{}, InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	defer m.Close()
	for n := 1; n <= 20; n++ {
		want := min(100*time.Millisecond<<(n-1), time.Second)
		for range 50 {
			if d := m.backoff(n); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %s, want in [%s, %s]", n, d, want/2, want)
			}
		}
	}
}
