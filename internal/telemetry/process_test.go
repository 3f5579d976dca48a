package telemetry

import (
	"bytes"
	"os"
	"runtime"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestWriteProcess(t *testing.T) {
	var buf bytes.Buffer
	if _, err := WriteProcess(&buf); err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("output is not valid Prometheus text: %v\n%s", err, buf.String())
	}
	value := func(name string) float64 {
		t.Helper()
		f := families[name]
		if f == nil || len(f.Metric) != 1 {
			t.Fatalf("%s missing or not one sample:\n%s", name, buf.String())
		}
		m := f.Metric[0]
		if m.Gauge != nil {
			return m.Gauge.GetValue()
		}
		return m.Counter.GetValue()
	}
	if g := value("go_goroutines"); g < 1 || g > float64(runtime.NumGoroutine()+100) {
		t.Errorf("go_goroutines = %v, runtime says %d", g, runtime.NumGoroutine())
	}
	if v := value("go_memstats_heap_alloc_bytes"); v <= 0 {
		t.Errorf("go_memstats_heap_alloc_bytes = %v", v)
	}
	if v, sys := value("go_memstats_heap_inuse_bytes"), value("go_memstats_sys_bytes"); v <= 0 || v > sys {
		t.Errorf("heap in use %v, runtime total %v", v, sys)
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		return
	}
	if rss := value("process_resident_memory_bytes"); rss < 1<<20 || rss > 1<<40 {
		t.Errorf("process_resident_memory_bytes = %v", rss)
	}
	if fds := value("process_open_fds"); fds < 3 {
		t.Errorf("process_open_fds = %v", fds)
	}
	if v := value("process_cpu_seconds_total"); v < 0 {
		t.Errorf("process_cpu_seconds_total = %v", v)
	}
	if v := value("process_start_time_seconds"); v < 1e9 {
		t.Errorf("process_start_time_seconds = %v", v)
	}
	if v := value("go_threads"); v < 1 {
		t.Errorf("go_threads = %v", v)
	}
}
