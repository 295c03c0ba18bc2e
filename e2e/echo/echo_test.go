package echo

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestServerRecordsWhatItReceived(t *testing.T) {
	s := &Server{}
	srv := httptest.NewServer(s)
	defer srv.Close()

	req, err := http.NewRequest(http.MethodPost, srv.URL+"/a%2Fb/c?x=1&y=%20", strings.NewReader(`{"k":1}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header["X-Multi"] = []string{"1", "2"}
	req.Header.Set("X-Request-Id", "id-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var answered Request
	if err := json.NewDecoder(resp.Body).Decode(&answered); err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get(MarkerHeader) != "true" {
		t.Errorf("%s missing from the answer", MarkerHeader)
	}

	got, ok := s.ByRequestID("id-1")
	if !ok || s.Count() != 1 {
		t.Fatalf("recorded %d requests, found id-1: %v", s.Count(), ok)
	}
	if got.Method != http.MethodPost || got.Path != "/a%2Fb/c" || got.RawQuery != "x=1&y=%20" || got.Body != `{"k":1}` {
		t.Errorf("recorded %+v", got)
	}
	if v := got.Header["x-multi"]; len(v) != 2 || v[0] != "1" || v[1] != "2" {
		t.Errorf("x-multi = %q, want both values in order", v)
	}
	if !got.Has("X-Request-Id") || got.Get("x-request-id") != "id-1" {
		t.Errorf("x-request-id = %q", got.Get("x-request-id"))
	}
	if answered.Path != got.Path || answered.Body != got.Body {
		t.Errorf("answered %+v, recorded %+v", answered, got)
	}
	if last, _ := s.Last(); last.Path != got.Path {
		t.Errorf("Last = %+v", last)
	}
	if _, ok := s.ByRequestID("other"); ok {
		t.Error("found a request id that was never sent")
	}
}
