// Package gctune applies the configuration's runtime section to the process: the garbage collector's target
// (GOGC) and its soft memory limit (GOMEMLIMIT), taken from the container's memory limit when none is configured.
//
// It changes process-wide settings, so only a binary calls it, once, at start; the library packages never do.
package gctune

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"runtime/debug"

	"github.com/KimMachineGun/automemlimit/memlimit"

	"github.com/finauthz/authz/authz/config"
)

// Where a setting came from, as Settings reports it.
const (
	FromEnvironment = "environment" // GOGC or GOMEMLIMIT, read by the Go runtime at start
	FromConfig      = "config"
	FromCgroup      = "cgroup" // a share of the container's memory limit
)

// Settings is what Apply put in effect.
type Settings struct {
	// GCPercent is the collector's target; -1 when off.
	GCPercent int
	// GCPercentFrom is FromEnvironment or FromConfig.
	GCPercentFrom string
	// MemoryLimit is the soft memory limit in bytes; 0 when there is none.
	MemoryLimit int64
	// MemoryLimitFrom is FromEnvironment, FromConfig or FromCgroup; "" when there is no limit.
	MemoryLimitFrom string
	// Warning, when not empty, says why the container's memory limit could not be read; the process then runs
	// without a memory limit.
	Warning string
}

// MemoryLimitText says the memory limit for a log line: "none", or its MiB and where it came from.
func (s Settings) MemoryLimitText() string {
	if s.MemoryLimit == 0 {
		return "none"
	}
	return fmt.Sprintf("%d MiB (%s)", s.MemoryLimit>>20, s.MemoryLimitFrom)
}

// Host is what Apply reads of the process's surroundings.
type Host struct {
	// Getenv reads the environment (os.Getenv).
	Getenv func(string) string
	// CgroupLimit returns the memory limit of the process's cgroup, or an error when there is none or it
	// cannot be read (memlimit.FromCgroup of github.com/KimMachineGun/automemlimit).
	CgroupLimit func() (uint64, error)
}

// Apply sets the collector's target and memory limit from c, except the ones GOGC and GOMEMLIMIT already set.
// It refuses a collector turned off with no memory limit in effect: nothing would bound the heap.
func Apply(c config.Runtime, h Host) (Settings, error) {
	var s Settings
	if h.Getenv("GOGC") != "" {
		s.GCPercent, s.GCPercentFrom = gcPercent(), FromEnvironment
	} else {
		s.GCPercent, s.GCPercentFrom = c.GCPercent, FromConfig
	}
	switch {
	case h.Getenv("GOMEMLIMIT") != "":
		if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
			s.MemoryLimit, s.MemoryLimitFrom = l, FromEnvironment
		}
	case c.MemoryLimitMiB > 0:
		s.MemoryLimit, s.MemoryLimitFrom = int64(c.MemoryLimitMiB)<<20, FromConfig
	default:
		limit, err := h.CgroupLimit()
		switch {
		case err == nil && limit > 0 && limit < math.MaxInt64:
			s.MemoryLimit, s.MemoryLimitFrom = int64(float64(limit)*c.MemoryLimitRatio), FromCgroup
		case err != nil && !noLimit(err):
			s.Warning = fmt.Sprintf("container memory limit not read: %v", err)
		}
	}
	if s.GCPercent < 0 && s.MemoryLimit == 0 {
		return Settings{}, errors.New("gctune: the garbage collector is off (GOGC=off or runtime.gc_percent: -1) and no memory limit is set: nothing would bound the heap")
	}
	if s.GCPercentFrom == FromConfig {
		debug.SetGCPercent(s.GCPercent)
	}
	if s.MemoryLimitFrom == FromConfig || s.MemoryLimitFrom == FromCgroup {
		debug.SetMemoryLimit(s.MemoryLimit)
	}
	return s, nil
}

// gcPercent reads the collector's target, which the runtime only reports by being set.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// System is the running process's Host.
func System() Host { return Host{Getenv: os.Getenv, CgroupLimit: memlimit.FromCgroup} }

// noLimit reports whether err only says that there is no container memory limit to follow.
func noLimit(err error) bool {
	return errors.Is(err, memlimit.ErrNoLimit) || errors.Is(err, memlimit.ErrNoCgroup) ||
		errors.Is(err, memlimit.ErrCgroupsNotSupported) || errors.Is(err, fs.ErrNotExist)
}
