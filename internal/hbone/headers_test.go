package hbone

import (
	"maps"
	"net/netip"
	"strings"
	"testing"
)

func TestParseForwarded(t *testing.T) {
	ip := netip.MustParseAddr
	tests := []struct {
		name   string
		values []string
		want   netip.Addr
		bad    bool
	}{
		{name: "none"},
		{name: "empty value", values: []string{""}},
		{name: "IPv4", values: []string{"for=192.0.2.60"}, want: ip("192.0.2.60")},
		{name: "IPv4 with other params", values: []string{"for=192.0.2.60;proto=http;by=203.0.113.43"}, want: ip("192.0.2.60")},
		{name: "params in any order, case-insensitive", values: []string{"proto=https; For=192.0.2.60"}, want: ip("192.0.2.60")},
		{name: "quoted IPv4 with port", values: []string{`for="192.0.2.60:8080"`}, want: ip("192.0.2.60")},
		{name: "IPv6", values: []string{`for="[2001:db8:cafe::17]"`}, want: ip("2001:db8:cafe::17")},
		{name: "IPv6 with port", values: []string{`for="[2001:db8:cafe::17]:4711"`}, want: ip("2001:db8:cafe::17")},
		{name: "IPv6 quoted without brackets", values: []string{`for="2001:db8::1"`}, want: ip("2001:db8::1")},
		{name: "IPv4-mapped IPv6", values: []string{`for="[::ffff:10.0.0.1]"`}, want: ip("10.0.0.1")},
		{name: "first element wins", values: []string{"for=192.0.2.43, for=198.51.100.17"}, want: ip("192.0.2.43")},
		{name: "first field line wins", values: []string{"for=10.0.0.1", "for=10.0.0.2"}, want: ip("10.0.0.1")},
		{name: "empty list elements", values: []string{" , ,for=10.0.0.1"}, want: ip("10.0.0.1")},
		{name: "empty pairs", values: []string{";;for=10.0.0.1;"}, want: ip("10.0.0.1")},
		{name: "unknown", values: []string{"for=unknown, for=10.0.0.1"}},
		{name: "obfuscated", values: []string{"for=_hidden, for=10.0.0.1"}},
		{name: "obfuscated with port", values: []string{`for="_hidden:_port"`}},
		{name: "no for", values: []string{"proto=https;by=10.0.0.1"}},
		{name: "quoted escapes", values: []string{`for="10.0.0.1";x="a\"b\\c"`}, want: ip("10.0.0.1")},

		{name: "unquoted IPv6", values: []string{"for=2001:db8::1"}, bad: true},
		{name: "unquoted brackets", values: []string{"for=[::1]"}, bad: true},
		{name: "unquoted port", values: []string{"for=10.0.0.1:80"}, bad: true},
		{name: "empty value", values: []string{"for="}, bad: true},
		{name: "empty quoted value", values: []string{`for=""`}, bad: true},
		{name: "no value", values: []string{"for"}, bad: true},
		{name: "no name", values: []string{"=10.0.0.1"}, bad: true},
		{name: "space for equals", values: []string{"for 10.0.0.1"}, bad: true},
		{name: "repeated parameter", values: []string{"for=10.0.0.1;for=10.0.0.2"}, bad: true},
		{name: "repeated other parameter", values: []string{"a=1;b=2;c=3;d=4;e=5;a=6"}, bad: true},
		{name: "unterminated quote", values: []string{`for="10.0.0.1`}, bad: true},
		{name: "junk after quote", values: []string{`for="10.0.0.1"x`}, bad: true},
		{name: "bad escape", values: []string{"for=\"10.0.0.1\\\x01\""}, bad: true},
		{name: "control char in quote", values: []string{"for=\"10.0.0.1\x00\""}, bad: true},
		{name: "bad IPv4", values: []string{"for=300.1.1.1"}, bad: true},
		{name: "host name", values: []string{"for=example.com"}, bad: true},
		{name: "bad port", values: []string{`for="[::1]:99999"`}, bad: true},
		{name: "empty port", values: []string{`for="10.0.0.1:"`}, bad: true},
		{name: "zone", values: []string{`for="[fe80::1%eth0]"`}, bad: true},
		{name: "IPv4 in brackets", values: []string{`for="[10.0.0.1]"`}, bad: true},
		{name: "missing bracket", values: []string{`for="[::1"`}, bad: true},
		{name: "bad obfuscated", values: []string{"for=_"}, bad: true},
		{name: "malformed later element", values: []string{"for=10.0.0.1, for=bogus"}, bad: true},
		{name: "malformed later line", values: []string{"for=10.0.0.1", "for=\"x"}, bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseForwarded(tt.values)
			if tt.bad {
				if err == nil {
					t.Fatalf("ParseForwarded(%q) = %v, want an error", tt.values, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseForwarded(%q) = %v, %v; want %v", tt.values, got, err, tt.want)
			}
		})
	}
}

func TestFormatForwardedRoundTrip(t *testing.T) {
	for _, s := range []string{"10.1.2.3", "2001:db8::1", "::ffff:10.0.0.1", "::1"} {
		a := netip.MustParseAddr(s)
		v := FormatForwarded(a)
		got, err := ParseForwarded([]string{v})
		if err != nil || got != a.Unmap() {
			t.Errorf("%s: FormatForwarded = %q, parses to %v, %v", s, v, got, err)
		}
	}
	if got := FormatForwarded(netip.MustParseAddr("2001:db8::1")); got != `for="[2001:db8::1]"` {
		t.Errorf("IPv6: %s", got)
	}
}

func TestParseBaggage(t *testing.T) {
	tests := []struct {
		name    string
		values  []string
		want    Baggage
		wantErr bool
	}{
		{name: "none"},
		{name: "istio", values: []string{"k8s.cluster.name=K1,k8s.namespace.name=NS1,k8s.deployment.name=N1,service.name=N2,service.version=V1"},
			want: Baggage{"k8s.cluster.name": "K1", "k8s.namespace.name": "NS1", "k8s.deployment.name": "N1", "service.name": "N2", "service.version": "V1"}},
		{name: "whitespace and properties", values: []string{" a = 1 ; prop ; p2=x , b=2"}, want: Baggage{"a": "1", "b": "2"}},
		{name: "several field lines", values: []string{"a=1", "b=2"}, want: Baggage{"a": "1", "b": "2"}},
		{name: "percent-encoded", values: []string{"a=hello%20world%2C%3B"}, want: Baggage{"a": "hello world,;"}},
		{name: "empty value", values: []string{"a="}, want: Baggage{"a": ""}},
		{name: "first of repeated key wins", values: []string{"a=1,a=2"}, want: Baggage{"a": "1"}},
		{name: "empty members", values: []string{",,a=1,,"}, want: Baggage{"a": "1"}},
		{name: "member without =", values: []string{"a=1,junk,b=2"}, want: Baggage{"a": "1", "b": "2"}, wantErr: true},
		{name: "empty key", values: []string{"=1,b=2"}, want: Baggage{"b": "2"}, wantErr: true},
		{name: "bad key", values: []string{"a b=1,c=2"}, want: Baggage{"c": "2"}, wantErr: true},
		{name: "bad value byte", values: []string{`a="x",b=2`}, want: Baggage{"b": "2"}, wantErr: true},
		{name: "space in value", values: []string{"a=x y,b=2"}, want: Baggage{"b": "2"}, wantErr: true},
		{name: "bad percent", values: []string{"a=%zz,b=%4"}, wantErr: true},
		{name: "too many members", values: []string{strings.Repeat("k=v,", 200)}, want: Baggage{"k": "v"}, wantErr: true},
		{name: "too long", values: []string{"a=1," + strings.Repeat("x", 9000)}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBaggage(tt.values)
			if (err != nil) != tt.wantErr {
				t.Errorf("error = %v, want error: %v", err, tt.wantErr)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("ParseBaggage(%q) = %v, want %v", tt.values, got, tt.want)
			}
		})
	}
}

func TestPeerMetadataBaggage(t *testing.T) {
	m := PeerMetadata{Cluster: "c1", Namespace: "ns", Workload: "web", WorkloadKind: "statefulset",
		Service: "web", Version: "v1", Region: "eu-west", Zone: "eu-west-1a"}
	v := m.Baggage()
	want := "k8s.cluster.name=c1,k8s.namespace.name=ns,k8s.statefulset.name=web,service.name=web,service.version=v1,cloud.region=eu-west,cloud.availability_zone=eu-west-1a"
	if v != want {
		t.Errorf("Baggage() = %s\nwant        %s", v, want)
	}
	b, err := ParseBaggage([]string{v})
	if err != nil || b.PeerMetadata() != m {
		t.Errorf("round trip: %+v, %v", b.PeerMetadata(), err)
	}
	// Empty fields are left out; values that need it are percent-encoded.
	m = PeerMetadata{Namespace: "a b,c"}
	if v := m.Baggage(); v != "k8s.namespace.name=a%20b%2Cc" {
		t.Errorf("Baggage() = %s", v)
	}
	if got := (Baggage{"z": "1", "a": "%"}).String(); got != "a=%25,z=1" {
		t.Errorf("String() = %s", got)
	}
}
