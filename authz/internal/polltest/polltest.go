// Package polltest waits, in tests, for a condition that another goroutine or process makes true.
package polltest

import (
	"testing"
	"time"
)

// Until polls cond every 2ms until it holds, and fails the test if it does not within 10 seconds; what says
// what was awaited.
func Until(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting until %s", what)
		}
		<-tick.C
	}
}
