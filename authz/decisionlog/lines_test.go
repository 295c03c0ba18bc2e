package decisionlog

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	authzv1 "github.com/finauthz/authz/proto/authz/v1"
)

func sampleRecord(id string) *authzv1.DecisionLog {
	return &authzv1.DecisionLog{
		Timestamp:      timestamppb.New(time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)),
		DecisionId:     id,
		RequestId:      "req-1",
		Issuer:         "https://idp.bank.example",
		Subject:        "alice",
		ClientId:       "bank-app",
		Method:         "GET",
		Route:          "transactions.list",
		Decision:       authzv1.Decision_DECISION_DENY,
		Reason:         "insufficient_scope",
		HttpStatus:     403,
		PolicyRevision: "410140d534b70c58",
		Latency:        durationpb.New(1500 * time.Microsecond),
	}
}

// TestJSONFieldNamesAreTheSchemas pins the line format: the .proto field names, enums by name.
func TestJSONFieldNamesAreTheSchemas(t *testing.T) {
	out := &syncBuffer{}
	s := NewLinesSink(out)
	if err := s.Write(context.Background(), []*authzv1.DecisionLog{sampleRecord("d-1"), sampleRecord("d-2")}); err != nil {
		t.Fatal(err)
	}
	recs := parseLines(t, out.String())
	if len(recs) != 2 {
		t.Fatalf("%d lines, want 2", len(recs))
	}
	want := map[string]any{
		"timestamp": "2026-03-14T09:26:53Z", "decision_id": "d-1", "request_id": "req-1",
		"issuer": "https://idp.bank.example", "subject": "alice", "client_id": "bank-app", "method": "GET",
		"route": "transactions.list", "decision": "DECISION_DENY", "reason": "insufficient_scope",
		"http_status": float64(403), "policy_revision": "410140d534b70c58", "latency": "0.001500s",
	}
	for k, v := range want {
		if recs[0][k] != v {
			t.Errorf("%s = %v, want %v", k, recs[0][k], v)
		}
	}
	if len(recs[0]) != len(want) {
		t.Errorf("line has fields %v, want exactly %d", recs[0], len(want))
	}
}

func TestFileSinkAppendsToAPrivateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	for _, id := range []string{"d-1", "d-2"} {
		s, err := OpenFileSink(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Write(context.Background(), []*authzv1.DecisionLog{sampleRecord(id)}); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	recs := parseLines(t, string(b))
	if len(recs) != 2 || recs[0]["decision_id"] != "d-1" || recs[1]["decision_id"] != "d-2" {
		t.Errorf("file holds %v, want d-1 then d-2", recs)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", fi.Mode().Perm())
	}
}
