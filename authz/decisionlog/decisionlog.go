// Package decisionlog keeps a record of every authorization decision (the protobuf message
// authz.v1.DecisionLog): who asked for what, what was decided, why, and by which policy revision. Records are
// built and shipped off the request path: a check only hands its outcome to a bounded buffer, and a record that
// finds the buffer full is dropped and counted, so a slow or failing sink never slows a check down.
//
// A record never holds a bearer token. The policy input is left out unless asked for, and then loses the
// authorization headers and whatever the policy's mask rule names; digit runs that may be card numbers are
// masked in every string.
package decisionlog

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/finauthz/authz/authz/server"
	authzv1 "github.com/finauthz/authz/proto/authz/v1"
)

// DefaultBuffer is the default capacity of the buffer between checks and the sink.
const DefaultBuffer = 10000

// DefaultBatchSize is the default largest batch handed to the sink.
const DefaultBatchSize = 256

// Sink delivers records. Write is called from one goroutine at a time, never from a check; it may take its
// time (retries included) while records queue, up to the buffer's capacity, behind it.
type Sink interface {
	// Write delivers a batch, in order. An error means the records are lost; they are counted as dropped.
	Write(ctx context.Context, records []*authzv1.DecisionLog) error
	// Close releases the sink after the last Write.
	Close() error
}

// Config configures a Logger.
type Config struct {
	// Sink receives the records; required.
	Sink Sink
	// Buffer bounds the records waiting for the sink; DefaultBuffer when 0.
	Buffer int
	// BatchSize bounds one Sink.Write; DefaultBatchSize when 0.
	BatchSize int
	// FlushInterval is the longest a record waits for its batch to fill. 0 writes as soon as no more records
	// are waiting (a stream, for the JSON lines sinks).
	FlushInterval time.Duration
	// Record says what goes into each record.
	Record RecordOptions
	// Logger receives sink failures (rate-limited) and masking failures. Default: discard.
	Logger *slog.Logger
}

// Counts are a Logger's counters since New.
type Counts struct {
	Written    uint64 // records the sink accepted
	BufferFull uint64 // records dropped because the buffer was full
	SinkFailed uint64 // records dropped because the sink failed
}

// Logger is a server.Observer that writes one record per check. Its goroutine runs until Close.
type Logger struct {
	sink          Sink
	queue         chan entry
	batchSize     int
	flushInterval time.Duration
	rec           recorder
	log           *slog.Logger

	closed     atomic.Bool
	written    atomic.Uint64
	bufferFull atomic.Uint64
	sinkFailed atomic.Uint64

	ctx       context.Context // cancelled when Close runs out of time: aborts a Write in progress
	cancel    context.CancelFunc
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	lastSinkError time.Time // worker goroutine only
}

// New validates cfg and starts the Logger's goroutine.
func New(cfg Config) (*Logger, error) {
	if cfg.Sink == nil {
		return nil, errors.New("decisionlog: a sink is required")
	}
	if cfg.Buffer < 0 || cfg.BatchSize < 0 || cfg.FlushInterval < 0 {
		return nil, errors.New("decisionlog: buffer, batch size and flush interval must not be negative")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rec, err := newRecorder(cfg.Record, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Logger{
		sink:          cfg.Sink,
		queue:         make(chan entry, orDefault(cfg.Buffer, DefaultBuffer)),
		batchSize:     orDefault(cfg.BatchSize, DefaultBatchSize),
		flushInterval: cfg.FlushInterval,
		rec:           rec,
		log:           log,
		ctx:           ctx,
		cancel:        cancel,
		stop:          make(chan struct{}),
		done:          make(chan struct{}),
	}
	go l.run()
	return l, nil
}

// CheckStart implements server.Observer.
func (l *Logger) CheckStart(ctx context.Context, _ *authv3.CheckRequest) context.Context { return ctx }

// CheckDone implements server.Observer. It never blocks: when the buffer is full the record is dropped and
// counted.
func (l *Logger) CheckDone(ctx context.Context, info *server.CheckInfo) {
	if l.closed.Load() {
		return
	}
	select {
	case l.queue <- l.rec.capture(ctx, info):
	default:
		l.bufferFull.Add(1)
	}
}

// Counts returns the Logger's counters.
func (l *Logger) Counts() Counts {
	return Counts{Written: l.written.Load(), BufferFull: l.bufferFull.Load(), SinkFailed: l.sinkFailed.Load()}
}

// Close stops taking records, writes those buffered within ctx, and closes the sink. When ctx ends first, the
// write in progress is abandoned and the records left are counted as dropped. Close is idempotent.
func (l *Logger) Close(ctx context.Context) error {
	var err error
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		close(l.stop)
		select {
		case <-l.done:
		case <-ctx.Done():
			l.cancel()
			<-l.done
			err = ctx.Err()
		}
		l.cancel()
		if cerr := l.sink.Close(); cerr != nil && err == nil {
			err = cerr
		}
	})
	return err
}

func (l *Logger) run() {
	defer close(l.done)
	batch := make([]*authzv1.DecisionLog, 0, l.batchSize)
	var (
		timer  *time.Timer
		timerC <-chan time.Time
	)
	flush := func() {
		if timer != nil {
			timer.Stop()
			timerC = nil
		}
		if len(batch) == 0 {
			return
		}
		l.write(batch)
		clear(batch)
		batch = batch[:0]
	}
	for {
		select {
		case e := <-l.queue:
			batch = append(batch, l.rec.record(l.ctx, e))
			switch {
			case len(batch) >= l.batchSize:
				flush()
			case l.flushInterval == 0:
				if len(l.queue) == 0 {
					flush()
				}
			case len(batch) == 1:
				if timer == nil {
					timer = time.NewTimer(l.flushInterval)
				} else {
					timer.Reset(l.flushInterval)
				}
				timerC = timer.C
			}
		case <-timerC:
			timerC = nil
			flush()
		case <-l.stop:
		drain:
			for {
				select {
				case e := <-l.queue:
					if l.ctx.Err() != nil {
						l.sinkFailed.Add(1)
						continue
					}
					batch = append(batch, l.rec.record(l.ctx, e))
					if len(batch) >= l.batchSize {
						flush()
					}
				default:
					break drain
				}
			}
			flush()
			return
		}
	}
}

// write hands a batch to the sink and counts the outcome.
func (l *Logger) write(batch []*authzv1.DecisionLog) {
	if l.ctx.Err() != nil {
		l.sinkFailed.Add(uint64(len(batch)))
		return
	}
	if err := l.sink.Write(l.ctx, batch); err != nil {
		l.sinkFailed.Add(uint64(len(batch)))
		// One line per 10s at most: a sink that is down must not flood the service's own log.
		if now := time.Now(); now.Sub(l.lastSinkError) >= 10*time.Second {
			l.lastSinkError = now
			l.log.LogAttrs(l.ctx, slog.LevelWarn, "decision log sink failed: records dropped",
				slog.Int("records", len(batch)), slog.String("error", err.Error()))
		}
		return
	}
	l.written.Add(uint64(len(batch)))
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}
