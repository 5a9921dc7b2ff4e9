package registry

import (
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// routeKey is the echo.Context key holding the endpoint kind, used as a
// low-cardinality metrics label (never the repository name).
const routeKey = "dockyard.route"

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	bytesIn  *prometheus.CounterVec
	bytesOut *prometheus.CounterVec
	handler  http.Handler
}

func newMetrics(reg prometheus.Registerer, gath prometheus.Gatherer) (*metrics, error) {
	if reg == nil {
		own := prometheus.NewRegistry()
		reg, gath = own, own
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dockyard_registry_requests_total",
			Help: "Registry HTTP requests by endpoint, method and status code.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dockyard_registry_request_duration_seconds",
			Help:    "Registry HTTP request latency by endpoint and method.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"route", "method"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dockyard_registry_received_bytes_total",
			Help: "Request body bytes received by endpoint.",
		}, []string{"route"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dockyard_registry_sent_bytes_total",
			Help: "Response body bytes sent by endpoint.",
		}, []string{"route"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.bytesIn, m.bytesOut} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	if gath != nil {
		m.handler = promhttp.HandlerFor(gath, promhttp.HandlerOpts{})
	} else {
		m.handler = http.NotFoundHandler()
	}
	return m, nil
}

type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// observe records metrics and one structured log line per request.
func (r *Registry) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		req := c.Request()
		body := &countingBody{ReadCloser: req.Body}
		req.Body = body
		err := next(c)
		if err != nil {
			// Render now so the status below is the one the client gets.
			c.Error(err)
		}
		route, _ := c.Get(routeKey).(string)
		if route == "" {
			route = "other"
		}
		status := c.Response().Status
		d := time.Since(start)
		r.metrics.requests.WithLabelValues(route, req.Method, strconv.Itoa(status)).Inc()
		r.metrics.latency.WithLabelValues(route, req.Method).Observe(d.Seconds())
		r.metrics.bytesIn.WithLabelValues(route).Add(float64(body.n))
		r.metrics.bytesOut.WithLabelValues(route).Add(float64(c.Response().Size))
		attrs := []any{"method", req.Method, "path", req.URL.Path, "status", status,
			"duration", d, "in", body.n, "out", c.Response().Size, "remote", req.RemoteAddr}
		if err != nil {
			attrs = append(attrs, "err", err.Error())
		}
		level := levelFor(status)
		if status == http.StatusNotFound && req.Method == http.MethodHead {
			level = slog.LevelDebug // clients probe for blobs before pushing them
		}
		if status == http.StatusUnauthorized && req.Header.Get(echo.HeaderAuthorization) == "" {
			level = slog.LevelDebug // the first leg of every token login; failed logins stay at info
		}
		r.log.Log(req.Context(), level, "registry request", attrs...)
		return nil
	}
}

// levelFor keeps successful requests at debug level: a push is hundreds of
// requests, and failures are what an operator looks for.
func levelFor(status int) slog.Level {
	switch {
	case status >= 500:
		return slog.LevelError
	case status >= 400:
		return slog.LevelInfo
	default:
		return slog.LevelDebug
	}
}
