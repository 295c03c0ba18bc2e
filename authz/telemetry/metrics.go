// Package telemetry makes the service observable: Prometheus metrics, the admin HTTP listener that serves them
// with health and profiling endpoints, OpenTelemetry tracing of checks, and log redaction.
//
// Label values always come from small fixed sets: decisions, an allow-list of reasons, configured issuers.
// Nothing a client sends (a subject, a path, a header) ever becomes a label.
package telemetry

import (
	"context"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/finauthz/authz/authz/policy"
	"github.com/finauthz/authz/authz/server"
)

// checkBuckets span 10µs (a cached token and a small policy) to 1s (past any sane ext_authz timeout).
var checkBuckets = []float64{
	0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
}

var decisions = []string{server.DecisionAllow, server.DecisionDeny, server.DecisionError}

// Metrics holds the service's Prometheus metrics in a registry of its own. As a server.Observer it counts
// and times checks; its other methods record JWKS fetches and policy reloads, and watch the verifier and
// the decision log. The zero value is not usable; call NewMetrics.
type Metrics struct {
	reg           *prometheus.Registry
	inflight      prometheus.Gauge
	allowed       prometheus.Counter
	denied        map[string]prometheus.Counter // by reason label value
	errored       map[string]prometheus.Counter
	duration      map[string]prometheus.Observer // by decision
	jwksFetches   *prometheus.CounterVec
	policyReloads *prometheus.CounterVec
}

// NewMetrics registers the service's metrics, and the Go runtime and process collectors, in a new registry.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	checks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "authz_checks_total",
		Help: "Checks answered, by decision (allow, deny, error) and reason (an allow-list; any other reason is \"other\").",
	}, []string{"decision", "reason"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "authz_check_duration_seconds",
		Help:    "Time spent on a check, from its arrival to its answer, by decision.",
		Buckets: checkBuckets,
	}, []string{"decision"})
	m := &Metrics{
		reg: reg,
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authz_checks_in_flight",
			Help: "Checks being decided right now.",
		}),
		denied:   make(map[string]prometheus.Counter, len(knownReasons)+1),
		errored:  make(map[string]prometheus.Counter),
		duration: make(map[string]prometheus.Observer, len(decisions)),
		jwksFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authz_jwks_fetches_total",
			Help: "JWKS fetches, by configured issuer and result (success, error).",
		}, []string{"issuer", "result"}),
		policyReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authz_policy_reloads_total",
			Help: "Policy reloads, by result (success, failure). A failed reload keeps the previous policy serving.",
		}, []string{"result"}),
	}
	// Resolve every series the request path may touch once, so that counting a check is a map read.
	m.allowed = checks.WithLabelValues(server.DecisionAllow, ReasonNone)
	for _, r := range append(slices.Clone(knownReasons), ReasonOther) {
		m.denied[r] = checks.WithLabelValues(server.DecisionDeny, r)
		m.errored[r] = checks.WithLabelValues(server.DecisionError, r)
	}
	for _, d := range decisions {
		m.duration[d] = duration.WithLabelValues(d)
	}
	for _, r := range []string{"success", "failure"} {
		m.policyReloads.WithLabelValues(r)
	}
	reg.MustRegister(checks, duration, m.inflight, m.jwksFetches, m.policyReloads)
	return m
}

// Registry returns the registry the metrics live in, for tests and for additional collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text format, or OpenMetrics (with exemplars) when asked.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{EnableOpenMetrics: true, Registry: m.reg})
}

// CheckStart implements server.Observer.
func (m *Metrics) CheckStart(ctx context.Context, _ *authv3.CheckRequest) context.Context {
	m.inflight.Inc()
	return ctx
}

// CheckDone implements server.Observer. A sampled trace's id is attached to the duration as an exemplar.
func (m *Metrics) CheckDone(ctx context.Context, info *server.CheckInfo) {
	m.inflight.Dec()
	decision, reason, _ := info.Outcome()
	switch decision {
	case server.DecisionAllow:
		m.allowed.Inc()
	case server.DecisionDeny:
		counter(m.denied, reason).Inc()
	default:
		counter(m.errored, reason).Inc()
	}
	obs := m.duration[decision]
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
		if eo, ok := obs.(prometheus.ExemplarObserver); ok {
			eo.ObserveWithExemplar(info.Duration.Seconds(), prometheus.Labels{"trace_id": sc.TraceID().String()})
			return
		}
	}
	obs.Observe(info.Duration.Seconds())
}

func counter(byReason map[string]prometheus.Counter, reason string) prometheus.Counter {
	if c, ok := byReason[reason]; ok {
		return c
	}
	return byReason[ReasonOther]
}

// CheckRejected counts a check refused before it started (max_concurrent_checks): an error with reason
// resource_exhausted, as Envoy sees it.
func (m *Metrics) CheckRejected() {
	m.errored["resource_exhausted"].Inc()
}

// JWKSFetched counts one JWKS fetch of issuer; it fits token.Config.OnFetch. Issuers come from the
// configuration, so the label stays bounded.
func (m *Metrics) JWKSFetched(issuer string, err error) {
	result := "success"
	if err != nil {
		result = "error"
	}
	m.jwksFetches.WithLabelValues(issuer, result).Inc()
}

// PolicyReloaded counts one policy reload; err is nil when the new revision serves.
func (m *Metrics) PolicyReloaded(_ string, err error) {
	result := "success"
	if err != nil {
		result = "failure"
	}
	m.policyReloads.WithLabelValues(result).Inc()
}

// VerifierStats is what the metrics read from the token verifier at scrape time; *token.Verifier has it.
type VerifierStats interface {
	CacheStats() (hits, misses uint64)
	KeySetAges() map[string]time.Duration
}

// WatchVerifier exports the verifier's cache hits and misses and the age of each issuer's key set, read at
// every scrape. issuers are the configured issuers, whose fetch counters start at zero.
func (m *Metrics) WatchVerifier(v VerifierStats, issuers []string) {
	for _, iss := range issuers {
		m.jwksFetches.WithLabelValues(iss, "success")
		m.jwksFetches.WithLabelValues(iss, "error")
	}
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "authz_token_cache_hits_total",
			Help: "Token verifications answered by the verification cache.",
		}, func() float64 { h, _ := v.CacheStats(); return float64(h) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "authz_token_cache_misses_total",
			Help: "Token verifications the verification cache could not answer.",
		}, func() float64 { _, miss := v.CacheStats(); return float64(miss) }),
		&keySetAges{
			desc: prometheus.NewDesc("authz_jwks_keyset_age_seconds",
				"Time since the issuer's key set was last fetched successfully; absent until the first fetch.",
				[]string{"issuer"}, nil),
			ages: v.KeySetAges,
		},
	)
}

// keySetAges reports the age of each issuer's key set at scrape time.
type keySetAges struct {
	desc *prometheus.Desc
	ages func() map[string]time.Duration
}

func (k *keySetAges) Describe(ch chan<- *prometheus.Desc) { ch <- k.desc }

func (k *keySetAges) Collect(ch chan<- prometheus.Metric) {
	for iss, age := range k.ages() {
		ch <- prometheus.MustNewConstMetric(k.desc, prometheus.GaugeValue, age.Seconds(), iss)
	}
}

// WatchDecisionCache exports the policy decision cache's counters, read at every scrape.
func (m *Metrics) WatchDecisionCache(c *policy.MemoStats) {
	const help = "Policy evaluations by what the decision cache did: hit (served without evaluating), miss (evaluated " +
		"and stored) or uncacheable (evaluated, not stored: the decision read the clock, the network or randomness)."
	for result, n := range map[string]*atomic.Uint64{"hit": &c.Hits, "miss": &c.Misses, "uncacheable": &c.Uncacheable} {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "authz_decision_cache_lookups_total",
			Help:        help,
			ConstLabels: prometheus.Labels{"result": result},
		}, func() float64 { return float64(n.Load()) }))
	}
}

// WatchCheckDecoding exports how many CheckRequests went to the generic protobuf decoder (checkwire.Fallbacks),
// read at every scrape.
func (m *Metrics) WatchCheckDecoding(fallbacks func() uint64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "authz_check_request_decode_fallbacks_total",
		Help: "CheckRequests decoded by the generic protobuf decoder because they held something the direct decoder " +
			"does not know (typed metadata, raw header maps, fields of a newer Envoy): more CPU, the same result.",
	}, func() float64 { return float64(fallbacks()) }))
}

// DecisionLogCounts are the decision log's counters.
type DecisionLogCounts struct {
	Written    uint64 // records handed to the sink successfully
	BufferFull uint64 // records dropped because the buffer was full
	SinkFailed uint64 // records dropped because the sink failed, retries included
}

// WatchDecisionLog exports the decision log's counters, read at every scrape.
func (m *Metrics) WatchDecisionLog(counts func() DecisionLogCounts) {
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "authz_decision_logs_written_total",
			Help: "Decision log records written to the sink.",
		}, func() float64 { return float64(counts().Written) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "authz_decision_logs_dropped_total",
			Help:        "Decision log records dropped, by reason: buffer_full (the sink is behind) or sink_error.",
			ConstLabels: prometheus.Labels{"reason": "buffer_full"},
		}, func() float64 { return float64(counts().BufferFull) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "authz_decision_logs_dropped_total",
			Help:        "Decision log records dropped, by reason: buffer_full (the sink is behind) or sink_error.",
			ConstLabels: prometheus.Labels{"reason": "sink_error"},
		}, func() float64 { return float64(counts().SinkFailed) }),
	)
}
