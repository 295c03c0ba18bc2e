package envoy

import (
	"embed"
	"fmt"
	"regexp"
	"strconv"
)

// The ports sidecar.yaml ships with, each written once as a plain port_value.
const (
	ListenerPort = 10000 // inbound listener that other workloads call
	AuthzPort    = 9191  // the authorization service's gRPC endpoint, on loopback
	AppPort      = 8080  // the protected application, on loopback
	AdminPort    = 9901  // Envoy's admin interface, on loopback
)

//go:embed sidecar.yaml
var configs embed.FS

// Ports selects the ports of a sidecar configuration. A zero field keeps the port sidecar.yaml ships with.
type Ports struct {
	Listener uint32
	Authz    uint32
	App      uint32
	Admin    uint32
}

var portValue = regexp.MustCompile(`\bport_value:\s*(\d+)\b`)

// Sidecar returns sidecar.yaml with its ports replaced by the non-zero fields of p, everything else byte for
// byte as shipped, after loading the result as Load does. It fails when sidecar.yaml no longer holds each
// default port exactly once, so that a test never runs a configuration only partly moved to its ports, and when
// two ports of the result are equal.
func Sidecar(p Ports) ([]byte, error) {
	src, err := configs.ReadFile("sidecar.yaml")
	if err != nil {
		return nil, err
	}
	want := map[uint64]uint32{
		ListenerPort: pick(p.Listener, ListenerPort),
		AuthzPort:    pick(p.Authz, AuthzPort),
		AppPort:      pick(p.App, AppPort),
		AdminPort:    pick(p.Admin, AdminPort),
	}
	seen := make(map[uint32]bool, len(want))
	for _, to := range want {
		if seen[to] {
			return nil, fmt.Errorf("sidecar.yaml: port %d given twice", to)
		}
		seen[to] = true
	}

	found := make(map[uint64]int, len(want))
	out := portValue.ReplaceAllFunc(src, func(m []byte) []byte {
		sub := portValue.FindSubmatchIndex(m)
		n, err := strconv.ParseUint(string(m[sub[2]:sub[3]]), 10, 32)
		to, ok := want[n]
		if err != nil || !ok {
			return m
		}
		found[n]++
		return append(append(m[:sub[2]:sub[2]], strconv.FormatUint(uint64(to), 10)...), m[sub[3]:]...)
	})
	for from := range want {
		if found[from] != 1 {
			return nil, fmt.Errorf("sidecar.yaml: port_value %d appears %d times, want 1", from, found[from])
		}
	}
	if _, err := Load(out); err != nil {
		return nil, fmt.Errorf("sidecar.yaml with ports %+v: %w", p, err)
	}
	return out, nil
}

func pick(port uint32, def uint32) uint32 {
	if port == 0 {
		return def
	}
	return port
}
