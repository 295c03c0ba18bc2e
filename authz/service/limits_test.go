package service

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// slowPolicy allows /fast at once and spins on /slow for as long as the x-spin header's square: 10000 is some
// 10^8 evaluation steps, far beyond any deadline in these tests. The bound comes from the input, so no
// compile-time evaluation can precompute the loop.
const slowPolicy = `package envoy.authz

default allow := false

allow if input.parsed_path[0] == "fast"

allow if {
	input.parsed_path[0] == "slow"
	r := numbers.range(1, to_number(input.attributes.request.http.headers["x-spin"]))
	count([1 | some i in r; some j in r; i + j < 0]) == 0
}
`

// slowService runs the service on slowPolicy with the given extra keys and returns its address.
func slowService(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), []byte(slowPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	return runService(t, tlsYAML(t, "{}", extra), dir, Options{})
}

func slowRequest() *authv3.CheckRequest {
	return checkRequest("GET", "/slow", map[string]string{"x-spin": "10000"})
}

// waitAdmitted polls /fast until it is answered, which proves no check holds the only slot any more.
func waitAdmitted(t *testing.T, c authv3.AuthorizationClient, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := checkOnce(c, "/fast")
		if err == nil && summarise(resp).status == 200 {
			return
		}
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("fast check: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("fast check still refused after %v: the slow check kept running", within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCheckDeadlines(t *testing.T) {
	t.Parallel()
	t.Run("an incoming deadline shorter than the policy's time ends the check with DEADLINE_EXCEEDED", func(t *testing.T) {
		t.Parallel()
		addr := slowService(t, "max_concurrent_checks: 1\ncheck_timeout: 1m\n")
		c := dial(t, addr, insecure.NewCredentials())
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.Check(ctx, slowRequest())
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("slow check: %v, want DEADLINE_EXCEEDED", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("slow check took %v to fail", d)
		}
		// The server must have stopped evaluating too, not only the client waiting: with one slot, /fast is
		// admitted only once the slow evaluation has ended.
		waitAdmitted(t, c, 2*time.Second)
	})
	t.Run("check_timeout bounds a check that came without a deadline", func(t *testing.T) {
		t.Parallel()
		addr := slowService(t, "check_timeout: 300ms\n")
		c := dial(t, addr, insecure.NewCredentials())
		start := time.Now()
		_, err := c.Check(context.Background(), slowRequest())
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("slow check: %v, want DEADLINE_EXCEEDED", err)
		}
		if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
			t.Errorf("slow check failed after %v, want about 300ms", d)
		}
	})
	t.Run("check_timeout bounds a check whose deadline is later", func(t *testing.T) {
		t.Parallel()
		addr := slowService(t, "check_timeout: 300ms\n")
		c := dial(t, addr, insecure.NewCredentials())
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		_, err := c.Check(ctx, slowRequest())
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("slow check: %v, want DEADLINE_EXCEEDED", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("slow check failed after %v, want about 300ms", d)
		}
	})
}

func TestMaxConcurrentChecksFailsFast(t *testing.T) {
	t.Parallel()
	addr := slowService(t, "max_concurrent_checks: 1\ncheck_timeout: 1m\n")
	// Two connections, as two Envoy workers would have: on one connection the client itself would hold the second
	// stream back (max_concurrent_checks also bounds streams per connection).
	slowClient, fastClient := dial(t, addr, insecure.NewCredentials()), dial(t, addr, insecure.NewCredentials())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slowDone := make(chan error, 1)
	go func() {
		for {
			// Refused only while one of the fast checks below holds the slot: try again.
			_, err := slowClient.Check(ctx, slowRequest())
			if status.Code(err) != codes.ResourceExhausted {
				slowDone <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()

	// Until the slow check holds the slot, /fast is answered; once it does, /fast is refused at once.
	// Bounds are generous for -race on two shared cores; the slow check would hold a queued check for a minute.
	deadline := time.Now().Add(15 * time.Second)
	for {
		start := time.Now()
		_, err := checkOnce(fastClient, "/fast")
		if status.Code(err) == codes.ResourceExhausted {
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("refusal took %v, want it immediate", d)
			}
			break
		}
		if err != nil {
			t.Fatalf("fast check: %v", err)
		}
		select {
		case err := <-slowDone:
			t.Fatalf("slow check ended early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no check refused within 15s while the slow check ran")
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Envoy giving up on the slow check (its timeout) cancels it on the server, which frees the slot.
	cancel()
	if err := <-slowDone; status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled slow check: %v, want CANCELED", err)
	}
	waitAdmitted(t, fastClient, 2*time.Second)
}
