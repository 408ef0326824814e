// Package testcert makes the self-signed certificate the TLS, HTTP/2 and
// HTTP/3 tests serve: ECDSA P-256, for 127.0.0.1 and localhost, valid a day
// around now. Tests dial with verification off (the clients under test are
// not the point), or trust Pool.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

type made struct {
	cert    tls.Certificate
	certPEM []byte
	keyPEM  []byte
	err     error
}

// one is made once per test process: key generation is the slow part.
var one = sync.OnceValue(func() made {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return made{err: fmt.Errorf("generating the test key: %w", err)}
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-12 * time.Hour),
		NotAfter:     time.Now().Add(12 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return made{err: fmt.Errorf("making the test certificate: %w", err)}
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return made{err: fmt.Errorf("encoding the test key: %w", err)}
	}
	return made{
		cert:    tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
	}
})

// TB is the part of testing.TB these helpers use.
type TB interface {
	Helper()
	Fatal(args ...any)
}

// Certificate returns the certificate for a tls.Config.
func Certificate(t TB) tls.Certificate {
	t.Helper()
	m := one()
	if m.err != nil {
		t.Fatal(m.err)
	}
	return m.cert
}

// Write writes the certificate and its key as PEM files into dir, for a
// Caddyfile's `tls <cert> <key>` (`tls internal` would want to install its
// root in the system's trust store).
func Write(t TB, dir string) (certPath, keyPath string) {
	t.Helper()
	m := one()
	if m.err != nil {
		t.Fatal(m.err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, m.certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, m.keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}
