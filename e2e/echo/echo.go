// Package echo is the upstream application of end-to-end tests: an HTTP handler that records every request it
// receives (method, raw path and query, headers, body) and answers 200 with that record as JSON, so a test can
// assert both on what a client got and on what reached the application.
package echo

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
)

// MarkerHeader is set on every response of the echo server, so a client can tell an upstream answer from a reply
// the proxy generated itself.
const MarkerHeader = "X-Echo-Upstream"

// Request is what the upstream received.
type Request struct {
	Method string `json:"method"`
	// Path is the request target's path as sent on the wire, without the query.
	Path string `json:"path"`
	// RawQuery is the query as sent on the wire, without "?".
	RawQuery string `json:"raw_query"`
	Host     string `json:"host"`
	// Header holds the headers with lower-case names, values in the order received.
	Header map[string][]string `json:"header"`
	Body   string              `json:"body"`
}

// Get returns the first value of the header name (any case), or "".
func (r Request) Get(name string) string {
	if v := r.Header[strings.ToLower(name)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Has reports whether the header name (any case) was received at all.
func (r Request) Has(name string) bool {
	_, ok := r.Header[strings.ToLower(name)]
	return ok
}

// Server records requests; its zero value is ready to use. It is safe for concurrent use.
type Server struct {
	mu       sync.Mutex
	requests []Request
}

// ServeHTTP records r and answers with its JSON description.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	path, query, _ := strings.Cut(r.RequestURI, "?")
	rec := Request{
		Method:   r.Method,
		Path:     path,
		RawQuery: query,
		Host:     r.Host,
		Header:   make(map[string][]string, len(r.Header)),
		Body:     string(body),
	}
	for k, v := range r.Header {
		rec.Header[strings.ToLower(k)] = append([]string(nil), v...)
	}
	s.mu.Lock()
	s.requests = append(s.requests, rec)
	s.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(MarkerHeader, "true")
	_ = json.NewEncoder(w).Encode(rec)
}

// Count is the number of requests received so far.
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

// Requests returns a copy of every request received, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Last returns the most recent request; ok is false when none arrived.
func (s *Server) Last() (r Request, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.requests) == 0 {
		return Request{}, false
	}
	return s.requests[len(s.requests)-1], true
}

// ByRequestID returns the request that carried x-request-id id; ok is false when none did.
func (s *Server) ByRequestID(id string) (r Request, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.requests) - 1; i >= 0; i-- {
		if s.requests[i].Get("x-request-id") == id {
			return s.requests[i], true
		}
	}
	return Request{}, false
}
