package server

import (
	"sync/atomic"
	"time"
)

// denialBudget bounds the "check denied" log lines to perSecond per wall-clock second, so that a flood of bad
// requests (a credential-stuffing client, a broken deployment) costs counters, not log volume and the CPU to
// format it. Denials over the budget are counted and reported, as one line, by the next denial logged. Metrics and
// decision logs still see every check.
type denialBudget struct {
	perSecond int64 // 0 or below: no bound

	second  atomic.Int64 // the Unix second being counted
	logged  atomic.Int64 // lines in that second
	dropped atomic.Int64 // denials not logged since the last report
}

// take reports whether a denial at now may be logged and, when it may, how many were not logged since the last
// report (to be reported with it).
func (b *denialBudget) take(now time.Time) (ok bool, dropped int64) {
	if b.perSecond <= 0 {
		return true, 0
	}
	sec := now.Unix()
	if cur := b.second.Load(); cur != sec && b.second.CompareAndSwap(cur, sec) {
		b.logged.Store(0)
	}
	if b.logged.Add(1) > b.perSecond {
		b.dropped.Add(1)
		return false, 0
	}
	return true, b.dropped.Swap(0)
}
