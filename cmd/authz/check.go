package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/finauthz/authz/authz/envoyreq"
)

// stringList collects a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ", ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// check sends one CheckRequest shaped as Envoy would and prints the decision. Exit status: 0 allowed, 1 denied,
// 2 error, so scripts can branch on it.
func check(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", stderr)
	addr := fs.String("addr", "127.0.0.1:9191", "gRPC address of the service")
	method := fs.String("X", "GET", "HTTP method")
	var headers stringList
	fs.Var(&headers, "H", `request header "name: value" (repeatable)`)
	principal := fs.String("principal", "", "client certificate identity, as Envoy reports it after mTLS (spiffe://...)")
	source := fs.String("source", "127.0.0.1:40000", "client socket address ip:port")
	data := fs.String("d", "", "request body (sent as with_request_body would, up to 8 KiB)")
	timeout := fs.Duration("timeout", 2*time.Second, "deadline of the Check call (Envoy's ext_authz timeout)")
	asJSON := fs.Bool("json", false, "print the raw CheckResponse as JSON")
	caFile := fs.String("cacert", "", "CA bundle to verify a TLS listener (enables TLS)")
	certFile := fs.String("cert", "", "client certificate for an mTLS listener")
	keyFile := fs.String("key", "", "client private key for an mTLS listener")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "authz check: want exactly one URL, e.g. http://localhost/accounts")
		return exitError(2)
	}
	req, err := envoyreq.New(envoyreq.Request{
		Method: *method, URL: fs.Arg(0), Headers: headers, Body: []byte(*data), MaxBody: 8192,
		Principal: *principal, Source: *source, RequestID: fmt.Sprintf("authz-check-%x", time.Now().UnixNano()), // hex: a long digit run reads as a card number to log masking
	})
	if err != nil {
		fmt.Fprintf(stderr, "authz check: %v\n", err)
		return exitError(2)
	}
	creds, err := clientCredentials(*caFile, *certFile, *keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "authz check: %v\n", err)
		return exitError(2)
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		fmt.Fprintf(stderr, "authz check: %v\n", err)
		return exitError(2)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
	if err != nil {
		fmt.Fprintf(stderr, "authz check: %v\n", err)
		return exitError(2)
	}
	if *asJSON {
		b, err := protojson.MarshalOptions{Multiline: true}.Marshal(resp)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, string(b))
	} else {
		describe(stdout, resp)
	}
	if codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		return exitError(1)
	}
	return nil
}

// clientCredentials is plaintext without a CA file (the default listener is loopback plaintext), TLS 1.2+ with
// one, and mTLS when a client certificate is given as well.
func clientCredentials(caFile, certFile, keyFile string) (credentials.TransportCredentials, error) {
	if caFile == "" {
		if certFile != "" || keyFile != "" {
			return nil, errors.New("--cert and --key need --cacert")
		}
		return insecure.NewCredentials(), nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", caFile)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if certFile != "" || keyFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(cfg), nil
}

// describe prints a CheckResponse for a person.
func describe(w io.Writer, resp *authv3.CheckResponse) {
	md := ""
	if m := resp.GetDynamicMetadata(); m != nil {
		b, _ := protojson.Marshal(m)
		md = string(b)
	}
	if ok := resp.GetOkResponse(); codes.Code(resp.GetStatus().GetCode()) == codes.OK {
		fmt.Fprintln(w, "ALLOWED")
		for _, h := range ok.GetHeaders() {
			fmt.Fprintf(w, "  set header       %s: %s  (%s)\n", h.GetHeader().GetKey(), h.GetHeader().GetValue(), h.GetAppendAction())
		}
		for _, h := range ok.GetHeadersToRemove() {
			fmt.Fprintf(w, "  remove header    %s\n", h)
		}
		for _, q := range ok.GetQueryParametersToSet() {
			fmt.Fprintf(w, "  set query        %s=%s\n", q.GetKey(), q.GetValue())
		}
		for _, q := range ok.GetQueryParametersToRemove() {
			fmt.Fprintf(w, "  remove query     %s\n", q)
		}
		for _, h := range ok.GetResponseHeadersToAdd() {
			fmt.Fprintf(w, "  response header  %s: %s\n", h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
	} else {
		d := resp.GetDeniedResponse()
		status := int(d.GetStatus().GetCode())
		if status == 0 {
			status = 403 // Envoy's default for a denied check without a status
		}
		fmt.Fprintf(w, "DENIED %d\n", status)
		for _, h := range d.GetHeaders() {
			fmt.Fprintf(w, "  header           %s: %s\n", h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
		if d.GetBody() != "" {
			fmt.Fprintf(w, "  body             %s\n", d.GetBody())
		}
	}
	if md != "" {
		fmt.Fprintf(w, "  dynamic_metadata %s\n", md)
	}
}
