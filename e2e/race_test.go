//go:build race

package e2e

// raceEnabled builds the service with the race detector when the tests run with it, so that races in the
// service under real traffic fail the run, and so that the build shares the compiled packages of the other
// race-enabled test binaries.
const raceEnabled = true
