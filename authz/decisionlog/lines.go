package decisionlog

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"

	"google.golang.org/protobuf/encoding/protojson"

	authzv1 "github.com/finauthz/authz/proto/authz/v1"
)

// jsonOptions write a record as one line of protojson with the .proto field names ("decision_id"), which
// are part of the schema and so stable, unlike Go or camelCase names.
var jsonOptions = protojson.MarshalOptions{UseProtoNames: true}

// MarshalJSON returns rec as the decision log writes it: one line of JSON, without the newline.
func MarshalJSON(rec *authzv1.DecisionLog) ([]byte, error) {
	return jsonOptions.Marshal(rec)
}

// LinesSink writes records as JSON lines (one protojson object per line) to a writer.
type LinesSink struct {
	out    io.Writer
	w      *bufio.Writer
	closer io.Closer // nil for a writer the sink does not own
}

// NewLinesSink writes to w, which it does not close (os.Stdout, for instance).
func NewLinesSink(w io.Writer) *LinesSink {
	return &LinesSink{out: w, w: bufio.NewWriterSize(w, 64<<10)}
}

// OpenFileSink appends to the file at path, created with mode 0600 when missing: decision logs are
// personal data.
func OpenFileSink(path string) (*LinesSink, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("decisionlog: %w", err)
	}
	return &LinesSink{out: f, w: bufio.NewWriterSize(f, 64<<10), closer: f}, nil
}

// Write implements Sink: the batch is written and flushed before it returns.
func (s *LinesSink) Write(_ context.Context, records []*authzv1.DecisionLog) error {
	for _, rec := range records {
		b, err := MarshalJSON(rec)
		if err != nil {
			return fmt.Errorf("decisionlog: marshal: %w", err)
		}
		s.w.Write(b)
		s.w.WriteByte('\n')
	}
	if err := s.w.Flush(); err != nil {
		// A bufio.Writer keeps failing after one error; a full disk that recovers should not end the log.
		s.w.Reset(s.out)
		return fmt.Errorf("decisionlog: write: %w", err)
	}
	return nil
}

// Close implements Sink.
func (s *LinesSink) Close() error {
	err := s.w.Flush()
	if s.closer != nil {
		if cerr := s.closer.Close(); err == nil {
			err = cerr
		}
	}
	return err
}
