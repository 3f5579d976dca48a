package hbone

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"

	"github.com/ambit-mesh/ambit/internal/spiffe"
)

func FuzzParseForwarded(f *testing.F) {
	for _, s := range []string{
		"for=192.0.2.60;proto=http;by=203.0.113.43",
		`for="[2001:db8:cafe::17]:4711"`,
		"for=unknown, for=_x",
		`for="a\"b"`,
		"for=10.0.0.1:80",
		";,;,=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseForwarded([]string{s})
		if err != nil {
			if a.IsValid() {
				t.Fatalf("error %v with an address %v", err, a)
			}
			return
		}
		if a.IsValid() {
			if a.Zone() != "" || a.Is4In6() {
				t.Fatalf("%q: address %v has a zone or is 4-in-6", s, a)
			}
			// What we parse, we can render and parse back.
			b, err := ParseForwarded([]string{FormatForwarded(a)})
			if err != nil || b != a {
				t.Fatalf("%q: %v does not round-trip: %v, %v", s, a, b, err)
			}
		}
	})
}

func FuzzParseBaggage(f *testing.F) {
	for _, s := range []string{
		"k8s.cluster.name=K1,k8s.namespace.name=NS1,k8s.deployment.name=N1",
		" a = 1 ; prop ; p2=x , b=2",
		"a=%20%zz",
		"=,=,,",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, _ := ParseBaggage([]string{s})
		if len(b) > maxBaggageMembers {
			t.Fatalf("%d members", len(b))
		}
		// Rendering what was parsed gives the same members back (empty
		// values are not rendered).
		for k, v := range b {
			if v == "" {
				delete(b, k)
			}
		}
		if len(b) == 0 {
			return
		}
		out := b.String()
		if len(out) > maxBaggageBytes {
			return // percent-encoding can grow it beyond the limit
		}
		c, err := ParseBaggage([]string{out})
		if err != nil || len(c) != len(b) {
			t.Fatalf("%q -> %q -> %v, %v", s, out, c, err)
		}
		for k, v := range b {
			if c[k] != v {
				t.Fatalf("%q: member %q = %q after round trip, want %q", s, k, c[k], v)
			}
		}
	})
}

func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{"10.0.0.1:80", "[2001:db8::1]:443", "[fe80::1%eth0]:80", "a:1", ":80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := ParseAuthority(s)
		if err != nil {
			return
		}
		if ap.Port() == 0 || ap.Addr().Zone() != "" || ap.Addr().Is4In6() {
			t.Fatalf("%q parsed to %v", s, ap)
		}
		back, err := ParseAuthority(ap.String())
		if err != nil || back != ap {
			t.Fatalf("%q -> %v does not round-trip", s, ap)
		}
		if !strings.Contains(s, "]") && ap.Addr().Is6() && !strings.HasPrefix(s, "[") {
			t.Fatalf("%q: IPv6 without brackets accepted", s)
		}
		_ = netip.AddrPort{}
	})
}

// FuzzServerFrames feeds a server connection arbitrary frames after a valid
// SETTINGS frame: it must neither panic nor hang, whatever arrives.
func FuzzServerFrames(f *testing.F) {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, kv := range [][2]string{{":method", "CONNECT"}, {":authority", "10.0.0.1:80"}, {"baggage", "a=b"}} {
		enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	req := appendHeaderBlock(nil, 1, hb.Bytes(), false, 16384)
	data := appendFrameHeader(nil, 5, frameData, 0, 1)
	data = append(data, "hello"...)
	end := appendFrameHeader(nil, 0, frameData, flagEndStream, 1)
	f.Add(slices.Concat(req, data, end))
	f.Add(slices.Concat(req, appendRSTStream(nil, 1, ErrCodeCancel)))
	f.Add(slices.Concat(appendPing(nil, false, [8]byte{}), appendWindowUpdate(nil, 0, 1000), req, appendWindowUpdate(nil, 1, 1<<30)))
	f.Add(slices.Concat(appendSettings(nil, []setting{{settingInitialWindowSize, 1}, {settingMaxFrameSize, 1 << 20}}), req, data))
	f.Add(appendHeaderBlock(nil, 3, hb.Bytes(), true, 3)) // CONTINUATIONs
	f.Add([]byte{0, 0, 1, 9, 0, 0, 0, 0, 1, 0xff})

	srv, err := NewServer(ServerOptions{
		Certificates: newTestCerts(f, newTestCA(f)),
		Identity:     func(net.Addr, string) (spiffe.ID, error) { return serverID, nil },
		Handler:      echoHandler,
		Tuning:       Tuning{MaxHeaderBytes: 1 << 10, IdleTimeout: -1},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, frames []byte) {
		a, b := net.Pipe()
		c := newConn(a, true, srv.cfg, srv.log, &srv.stats)
		c.srv = srv
		go io.Copy(io.Discard, b)
		c.start()
		b.SetWriteDeadline(time.Now().Add(5 * time.Second))
		b.Write(appendSettings(nil, nil))
		b.Write(frames)
		b.Close()
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			t.Fatal("connection did not end")
		}
	})
}
