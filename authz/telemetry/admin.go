package telemetry

import (
	"net/http"
	// Importing net/http/pprof also registers its handlers on http.DefaultServeMux, which is never served
	// here; the admin mux mounts them itself, and only when asked to.
	"net/http/pprof"
	"time"
)

// AdminConfig configures the admin HTTP handler.
type AdminConfig struct {
	// Metrics serves /metrics; required.
	Metrics http.Handler
	// Ready reports readiness for /readyz: the service mirrors the gRPC health status (SERVING) here.
	// Required.
	Ready func() bool
	// PProf mounts net/http/pprof under /debug/pprof/.
	PProf bool
}

// AdminHandler serves, for GET and HEAD:
//
//	/metrics        Prometheus metrics
//	/healthz        liveness: 200 while the process serves HTTP
//	/readyz         readiness: 200 when cfg.Ready says so, 503 otherwise
//	/debug/pprof/   Go profiles, only with cfg.PProf
func AdminHandler(cfg AdminConfig) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", cfg.Metrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		plain(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if cfg.Ready() {
			plain(w, http.StatusOK, "ready\n")
			return
		}
		plain(w, http.StatusServiceUnavailable, "not ready\n")
	})
	if cfg.PProf {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// AdminServer returns an http.Server for AdminHandler(cfg) with timeouts that bound slow clients. Writes may
// take a minute, for CPU profiles and traces of up to about that long.
func AdminServer(cfg AdminConfig) *http.Server {
	return &http.Server{
		Handler:           AdminHandler(cfg),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      70 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
}

func plain(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}
