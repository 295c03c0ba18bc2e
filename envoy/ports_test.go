package envoy

import (
	"bytes"
	"errors"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
)

func TestSidecarDefaultPortsIsTheShippedFile(t *testing.T) {
	t.Parallel()
	got, err := Sidecar(Ports{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, readFile(t, "sidecar.yaml")) {
		t.Fatal("Sidecar(Ports{}) differs from sidecar.yaml")
	}
}

func TestSidecarMovesEveryPort(t *testing.T) {
	t.Parallel()
	p := Ports{Listener: 20000, Authz: 20001, App: 20002, Admin: 20003}
	data, err := Sidecar(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Load(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkBootstrap(data, sidecarPolicy); err != nil {
		t.Fatalf("the moved sidecar breaks policy: %v", err)
	}
	if got := b.GetAdmin().GetAddress().GetSocketAddress().GetPortValue(); got != p.Admin {
		t.Errorf("admin port %d, want %d", got, p.Admin)
	}
	if got := b.GetStaticResources().GetListeners()[0].GetAddress().GetSocketAddress().GetPortValue(); got != p.Listener {
		t.Errorf("listener port %d, want %d", got, p.Listener)
	}
	for name, want := range map[string]uint32{"ext_authz": p.Authz, "app": p.App} {
		if got := clusterPort(t, b, name); got != want {
			t.Errorf("cluster %s port %d, want %d", name, got, want)
		}
	}
}

func TestSidecarKeepsUnsetPorts(t *testing.T) {
	t.Parallel()
	data, err := Sidecar(Ports{Authz: 19191})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Load(data)
	if err != nil {
		t.Fatal(err)
	}
	if got := clusterPort(t, b, "ext_authz"); got != 19191 {
		t.Errorf("ext_authz port %d, want 19191", got)
	}
	if got := clusterPort(t, b, "app"); got != AppPort {
		t.Errorf("app port %d, want the default %d", got, AppPort)
	}
}

func TestSidecarRejectsBadPorts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		p    Ports
		want error
	}{
		{"two ports equal is an error", Ports{Listener: 30000, App: 30000}, nil},
		{"a port equal to another's default is an error", Ports{Listener: AppPort}, nil},
		{"a port over 65535 is invalid", Ports{Listener: 70000}, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Sidecar(tc.p)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("Sidecar(%+v) = %v, want an error wrapping %v", tc.p, err, tc.want)
			}
		})
	}
}

func clusterPort(t *testing.T, b *bootstrapv3.Bootstrap, name string) uint32 {
	t.Helper()
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == name {
			return c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue()
		}
	}
	t.Fatalf("no cluster %s", name)
	return 0
}
