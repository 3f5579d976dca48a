package spiffe

import (
	"crypto/x509"
	"net/url"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    ID
		wantErr bool
	}{
		{in: "spiffe://cluster.local/ns/default/sa/echo", want: ID{"cluster.local", "default", "echo"}},
		{in: "spiffe://td/ns/a/sa/b", want: ID{"td", "a", "b"}},
		{in: "http://cluster.local/ns/default/sa/echo", wantErr: true},
		{in: "spiffe://cluster.local/ns/default", wantErr: true},
		{in: "spiffe://cluster.local/ns//sa/echo", wantErr: true},
		{in: "spiffe:///ns/a/sa/b", wantErr: true},
		{in: "spiffe://td/ns/a/sa/b/extra", wantErr: true},
		{in: "spiffe://td/xx/a/sa/b", wantErr: true},
		{in: "spiffe://td:443/ns/a/sa/b", wantErr: true},
		{in: "spiffe://td/ns/a/sa/b?x=1", wantErr: true},
		{in: "spiffe://TD/ns/a/sa/b", wantErr: true},
		{in: "spiffe://td/ns/a%2f/sa/b", wantErr: true},
		{in: "spiffe://td/ns/../sa/b", wantErr: true},
		{in: "spiffe://user@td/ns/a/sa/b", wantErr: true},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("Parse(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil {
			if got != tt.want {
				t.Errorf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Errorf("round trip: %q != %q", got.String(), tt.in)
			}
			if got.URL().String() != tt.in {
				t.Errorf("URL(): %q != %q", got.URL().String(), tt.in)
			}
		}
	}
}

func TestFromCertificate(t *testing.T) {
	u := func(s string) *url.URL { x, _ := url.Parse(s); return x }
	tests := []struct {
		name    string
		uris    []*url.URL
		wantErr bool
	}{
		{"one", []*url.URL{u("spiffe://td/ns/a/sa/b")}, false},
		{"one plus non-spiffe", []*url.URL{u("https://x"), u("spiffe://td/ns/a/sa/b")}, false},
		{"none", nil, true},
		{"two", []*url.URL{u("spiffe://td/ns/a/sa/b"), u("spiffe://td/ns/a/sa/c")}, true},
		{"malformed", []*url.URL{u("spiffe://td/ns/a")}, true},
	}
	for _, tt := range tests {
		_, err := FromCertificate(&x509.Certificate{URIs: tt.uris})
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: err = %v, wantErr %v", tt.name, err, tt.wantErr)
		}
	}
}
