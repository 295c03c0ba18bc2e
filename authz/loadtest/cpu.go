package loadtest

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// userHZ is the unit of the CPU times in /proc/PID/stat: USER_HZ, 100 on every Linux ABI Go supports.
const userHZ = 100

// ProcessCPU returns a probe of the CPU time (user and system, all threads) the process pid has used so far, read
// from /proc/PID/stat, to 10 ms. Set as LoadConfig.ServerCPU, it measures what a run costs the server: a figure
// that moves far less with the neighbours' load than requests per second do; as LoadConfig.GeneratorCPU, what it
// costs the generator. Linux only.
func ProcessCPU(pid int) func() (time.Duration, error) {
	path := fmt.Sprintf("/proc/%d/stat", pid)
	return func() (time.Duration, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, fmt.Errorf("loadtest: CPU time of process %d: %w", pid, err)
		}
		return parseStatCPU(b)
	}
}

// parseStatCPU reads utime and stime, fields 14 and 15 of a /proc/PID/stat line. The command name, field 2, is in
// parentheses and may hold spaces and parentheses itself, so fields are counted from the last ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("loadtest: /proc stat line without a command name: %.40q", b)
	}
	fields := bytes.Fields(b[i+1:]) // fields[0] is field 3 (state)
	if len(fields) < 13 {
		return 0, fmt.Errorf("loadtest: /proc stat line has %d fields after the command name, want at least 13", len(fields))
	}
	var ticks uint64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseUint(string(f), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("loadtest: /proc stat CPU time %q: %w", f, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / userHZ), nil
}
