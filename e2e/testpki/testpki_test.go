package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"testing"
)

func TestMutualTLSWithASPIFFEID(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Server(Leaf{CommonName: "server", DNSNames: []string{"server.test"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Client(Leaf{CommonName: "worker", Organization: "Bank", SPIFFEID: "spiffe://bank.internal/ns/ops/sa/worker"})
	if err != nil {
		t.Fatal(err)
	}

	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{server}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	peer := make(chan *x509.Certificate, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			peer <- nil
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil || len(tc.ConnectionState().PeerCertificates) == 0 {
			peer <- nil
			return
		}
		peer <- tc.ConnectionState().PeerCertificates[0]
		_, _ = io.WriteString(c, "ok")
	}()

	c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{
		RootCAs: ca.Pool(), ServerName: "server.test", Certificates: []tls.Certificate{client},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.ReadAll(c); err != nil {
		t.Fatal(err)
	}
	got := <-peer
	if got == nil {
		t.Fatal("the server saw no verified client certificate")
	}
	if len(got.URIs) != 1 || got.URIs[0].String() != "spiffe://bank.internal/ns/ops/sa/worker" {
		t.Errorf("URI SANs %v", got.URIs)
	}
	if got.Subject.String() != "CN=worker,O=Bank" {
		t.Errorf("subject %q", got.Subject.String())
	}

	certPEM, keyPEM, err := PEM(client)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Errorf("PEM does not load back: %v", err)
	}
	if b, _ := pem.Decode(ca.PEM()); b == nil || b.Type != "CERTIFICATE" {
		t.Error("CA PEM does not decode")
	}
}
