package telemetry

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestAdminEndpoints(t *testing.T) {
	var ready atomic.Bool
	m := NewMetrics()
	tests := []struct {
		name       string
		pprof      bool
		method     string
		path       string
		ready      bool
		wantStatus int
		wantBody   string
	}{
		{"liveness answers while the process serves", false, "GET", "/healthz", false, 200, "ok"},
		{"readiness is 503 while not serving", false, "GET", "/readyz", false, 503, "not ready"},
		{"readiness is 200 once serving", false, "GET", "/readyz", true, 200, "ready"},
		{"metrics are served", false, "GET", "/metrics", false, 200, "authz_checks_in_flight"},
		{"HEAD works as GET", false, "HEAD", "/healthz", false, 200, ""},
		{"metrics cannot be posted to", false, "POST", "/metrics", false, 405, ""},
		{"pprof is absent unless enabled", false, "GET", "/debug/pprof/", false, 404, ""},
		{"pprof index when enabled", true, "GET", "/debug/pprof/", true, 200, "goroutine"},
		{"pprof profiles by name when enabled", true, "GET", "/debug/pprof/goroutine?debug=1", true, 200, "goroutine profile"},
		{"unknown paths are 404", false, "GET", "/admin", false, 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ready.Store(tc.ready)
			h := AdminHandler(AdminConfig{Metrics: m.Handler(), Ready: ready.Load, PProf: tc.pprof})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			if rec.Code != tc.wantStatus {
				t.Fatalf("%s %s = %d, want %d", tc.method, tc.path, rec.Code, tc.wantStatus)
			}
			if !strings.Contains(rec.Body.String(), tc.wantBody) {
				t.Errorf("body %q does not contain %q", rec.Body.String(), tc.wantBody)
			}
		})
	}
}

func TestAdminServerServesOverHTTP(t *testing.T) {
	srv := AdminServer(AdminConfig{Metrics: NewMetrics().Handler(), Ready: func() bool { return true }})
	if srv.ReadHeaderTimeout == 0 || srv.ReadTimeout == 0 || srv.WriteTimeout == 0 {
		t.Error("the admin server has no timeouts against slow clients")
	}
	ts := httptest.NewUnstartedServer(srv.Handler)
	ts.Config = srv
	ts.Start()
	defer ts.Close()
	resp, err := http.Get(ts.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("GET /readyz = %d (Cache-Control %q), want 200, no-store", resp.StatusCode, resp.Header.Get("Cache-Control"))
	}
}
