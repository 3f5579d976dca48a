package telemetry

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime/metrics"
	"strconv"
	"sync"
	"syscall"
)

// WriteProcess writes the Go runtime and process metrics a Prometheus
// client would export (go_goroutines, go_memstats_*, process_*), so that a
// proxy's memory and CPU can be watched on the same endpoint as its traffic.
// It reads runtime/metrics (no stop-the-world) and /proc/self; on systems
// without /proc the process_* families are left out.
func WriteProcess(w io.Writer) (int64, error) {
	ew := &errWriter{w: w}
	rt := readRuntime()
	for _, g := range runtimeGauges {
		writeHeader(ew, g.name, g.help, g.typ)
		writeSample(ew, g.name, "", g.value(rt))
	}
	if p, err := readProc(); err == nil {
		writeHeader(ew, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter")
		ew.WriteString("process_cpu_seconds_total " + strconv.FormatFloat(p.cpuSeconds, 'g', -1, 64) + "\n")
		writeHeader(ew, "process_resident_memory_bytes", "Resident memory size in bytes.", "gauge")
		writeSample(ew, "process_resident_memory_bytes", "", p.rss)
		writeHeader(ew, "process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge")
		writeSample(ew, "process_virtual_memory_bytes", "", p.vsize)
		writeHeader(ew, "process_open_fds", "Number of open file descriptors.", "gauge")
		writeSample(ew, "process_open_fds", "", p.openFDs)
		writeHeader(ew, "process_max_fds", "Maximum number of open file descriptors.", "gauge")
		writeSample(ew, "process_max_fds", "", p.maxFDs)
		writeHeader(ew, "process_start_time_seconds", "Start time of the process since unix epoch in seconds.", "gauge")
		ew.WriteString("process_start_time_seconds " + strconv.FormatFloat(p.startTime, 'f', 2, 64) + "\n")
		writeHeader(ew, "go_threads", "Number of OS threads created.", "gauge")
		writeSample(ew, "go_threads", "", p.threads)
	}
	return ew.n, ew.err
}

// The runtime/metrics samples WriteProcess reads, in this order.
var runtimeSampleNames = []string{
	"/sched/goroutines:goroutines",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/stacks:bytes",
	"/memory/classes/total:bytes",
	"/gc/heap/goal:bytes",
	"/gc/cycles/total:gc-cycles",
	"/gc/gomemlimit:bytes",
	"/gc/gogc:percent",
}

const (
	rtGoroutines = iota
	rtHeapObjects
	rtHeapUnused
	rtHeapFree
	rtHeapReleased
	rtStacks
	rtTotal
	rtGoal
	rtCycles
	rtLimit
	rtGOGC
)

var runtimeGauges = []struct {
	name, help, typ string
	value           func(s []uint64) uint64
}{
	{"go_goroutines", "Number of goroutines that currently exist.", "gauge", func(s []uint64) uint64 { return s[rtGoroutines] }},
	{"go_memstats_heap_alloc_bytes", "Bytes of allocated heap objects.", "gauge", func(s []uint64) uint64 { return s[rtHeapObjects] }},
	{"go_memstats_heap_inuse_bytes", "Bytes in in-use heap spans.", "gauge", func(s []uint64) uint64 { return s[rtHeapObjects] + s[rtHeapUnused] }},
	{"go_memstats_heap_idle_bytes", "Bytes in idle heap spans, released to the OS or not.", "gauge", func(s []uint64) uint64 { return s[rtHeapFree] + s[rtHeapReleased] }},
	{"go_memstats_heap_released_bytes", "Bytes of idle heap spans returned to the OS.", "gauge", func(s []uint64) uint64 { return s[rtHeapReleased] }},
	{"go_memstats_stack_inuse_bytes", "Bytes in stack spans.", "gauge", func(s []uint64) uint64 { return s[rtStacks] }},
	{"go_memstats_sys_bytes", "Bytes of memory obtained from the OS by the Go runtime.", "gauge", func(s []uint64) uint64 { return s[rtTotal] }},
	{"go_memstats_next_gc_bytes", "Heap size target of the next garbage collection.", "gauge", func(s []uint64) uint64 { return s[rtGoal] }},
	{"go_gc_cycles_total", "Completed garbage collection cycles.", "counter", func(s []uint64) uint64 { return s[rtCycles] }},
	{"go_gc_gomemlimit_bytes", "Go runtime soft memory limit (GOMEMLIMIT).", "gauge", func(s []uint64) uint64 { return s[rtLimit] }},
	{"go_gc_gogc_percent", "Heap growth target percentage (GOGC).", "gauge", func(s []uint64) uint64 { return s[rtGOGC] }},
}

var (
	rtMu      sync.Mutex
	rtSamples []metrics.Sample
)

func readRuntime() []uint64 {
	rtMu.Lock()
	defer rtMu.Unlock()
	if rtSamples == nil {
		rtSamples = make([]metrics.Sample, len(runtimeSampleNames))
		for i, n := range runtimeSampleNames {
			rtSamples[i].Name = n
		}
	}
	metrics.Read(rtSamples)
	out := make([]uint64, len(rtSamples))
	for i, s := range rtSamples {
		if s.Value.Kind() == metrics.KindUint64 {
			out[i] = s.Value.Uint64()
		}
	}
	return out
}

type procStats struct {
	cpuSeconds, startTime       float64
	rss, vsize, openFDs, maxFDs uint64
	threads                     uint64
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

func readProc() (procStats, error) {
	var p procStats
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return p, err
	}
	// The command name (field 2) is in parentheses and may contain spaces:
	// fields are counted after its closing parenthesis.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return p, fmt.Errorf("/proc/self/stat: no command name")
	}
	f := bytes.Fields(stat[i+1:])
	// f[0] is field 3 (state): field n is f[n-3].
	if len(f) < 22 {
		return p, fmt.Errorf("/proc/self/stat: %d fields", len(f)+2)
	}
	num := func(n int) uint64 { v, _ := strconv.ParseUint(string(f[n-3]), 10, 64); return v }
	p.cpuSeconds = float64(num(14)+num(15)) / clockTicks
	p.threads = num(20)
	p.vsize = num(23)
	p.rss = num(24) * uint64(os.Getpagesize())
	if bt, err := bootTime(); err == nil {
		p.startTime = float64(bt) + float64(num(22))/clockTicks
	}
	if d, err := os.ReadDir("/proc/self/fd"); err == nil {
		p.openFDs = uint64(len(d))
	}
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		p.maxFDs = rl.Cur
	}
	return p, nil
}

func bootTime() (uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("btime ")); ok {
			return strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/stat: no btime")
}
