package pemutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

func TestCertificates(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "t"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "t"}}, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1}}))
	tests := []struct {
		name, in string
		n        int
		wantErr  string
	}{
		{"one", cert, 1, ""},
		{"two with blank lines", cert + "\n\n" + cert, 2, ""},
		{"empty", "", 0, "no PEM certificate"},
		{"junk", "junk", 0, "trailing data"},
		{"trailing junk", cert + "junk", 0, "trailing data"},
		{"a key", keyPEM, 0, `unexpected PEM block "EC PRIVATE KEY"`},
		{"bad DER", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", 0, "x509"},
	}
	for _, tt := range tests {
		certs, err := Certificates([]byte(tt.in))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: err %v, want %q", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || len(certs) != tt.n {
			t.Errorf("%s: %d certs, err %v; want %d", tt.name, len(certs), err, tt.n)
		}
	}
}
