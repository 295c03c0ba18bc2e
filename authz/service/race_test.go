//go:build race

package service

// raceEnabled scales the time bounds of the attack suite: the race detector slows every check several times
// over, and the bounds are about the work a hostile input causes, not about the instrumentation.
const raceEnabled = true
