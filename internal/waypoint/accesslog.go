package waypoint

import (
	"bufio"
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// accessLog writes one JSON line per request, Envoy's default fields under
// their usual names. Lines are buffered and flushed every second (and when
// the buffer fills), so logging costs no system call per request.
type accessLog struct {
	mu   sync.Mutex
	w    *bufio.Writer
	buf  []byte
	stop chan struct{}
	done chan struct{}
}

func newAccessLog(w io.Writer) *accessLog {
	a := &accessLog{w: bufio.NewWriterSize(w, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				a.mu.Lock()
				a.w.Flush()
				a.mu.Unlock()
			case <-a.stop:
				return
			}
		}
	}()
	return a
}

func (a *accessLog) close() {
	if a == nil {
		return
	}
	close(a.stop)
	<-a.done
	a.mu.Lock()
	a.w.Flush()
	a.mu.Unlock()
}

func (a *accessLog) record(x *exchange, d time.Duration, reqBytes int64) {
	r := x.r
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.buf[:0]
	b = append(b, `{"start_time":`...)
	b = appendJSONString(b, x.start.UTC().Format(time.RFC3339Nano))
	b = appendField(b, "method", r.Method)
	b = appendField(b, "path", r.RequestURI)
	b = appendField(b, "protocol", r.Proto)
	b = append(b, `,"response_code":`...)
	b = strconv.AppendInt(b, int64(x.status), 10)
	b = appendField(b, "response_flags", x.flags)
	if x.grpc != "" {
		b = appendField(b, "grpc_status", x.grpc)
	}
	b = append(b, `,"bytes_received":`...)
	b = strconv.AppendInt(b, reqBytes, 10)
	b = append(b, `,"bytes_sent":`...)
	b = strconv.AppendInt(b, x.respN, 10)
	b = append(b, `,"duration":`...)
	b = strconv.AppendInt(b, d.Milliseconds(), 10)
	b = appendField(b, "authority", r.Host)
	b = appendField(b, "user_agent", r.UserAgent())
	b = appendField(b, "x_forwarded_for", r.Header.Get("X-Forwarded-For"))
	b = appendField(b, "request_id", r.Header.Get("X-Request-Id"))
	b = appendField(b, "traceparent", r.Header.Get("Traceparent"))
	if x.t != nil {
		b = appendField(b, "downstream_remote_address", x.t.src.String())
		b = appendField(b, "downstream_peer_principal", x.t.peer.String())
		b = appendField(b, "destination", x.t.authority.String())
	}
	if x.upstream.IsValid() {
		b = appendField(b, "upstream_host", x.upstream.String())
	}
	if x.endpoint != nil {
		b = appendField(b, "upstream_zone", x.endpoint.Locality.GetZone())
	}
	if x.dstSvc != nil {
		b = appendField(b, "upstream_service", x.dstSvc.GetHostname())
	}
	if x.rule != nil {
		b = appendField(b, "route_name", x.rule.r.GetOrigin())
	}
	b = append(b, "}\n"...)
	// Whole lines only reach the writer, so readers never see half a line.
	if a.w.Available() < len(b) {
		a.w.Flush()
	}
	a.w.Write(b)
	a.buf = b
}

func appendField(b []byte, name, v string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendJSONString(b, v)
}

// appendJSONString quotes s as a JSON string; bytes that are not valid
// UTF-8 become U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r < 0x20:
			b = append(b, `\u00`...)
			b = append(b, hexDigits[r>>4], hexDigits[r&0xf])
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return append(b, '"')
}
