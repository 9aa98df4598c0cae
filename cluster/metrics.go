package cluster

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the agent's Prometheus metrics, served on the local socket
// at /metrics: the read barrier's here, the subsystems' registered.
type metrics struct {
	reg     *prometheus.Registry
	barrier prometheus.Histogram
	stale   prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		barrier: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ssi_read_barrier_seconds", Help: "How long reads waited for the read barrier.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		stale: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ssi_stale_reads_total", Help: "Reads served from this replica without the barrier (no quorum).",
		}),
	}
	m.reg.MustRegister(m.barrier, m.stale,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// BarrierWait and StaleRead are peer.Metrics.
func (m *metrics) BarrierWait(d time.Duration) { m.barrier.Observe(d.Seconds()) }
func (m *metrics) StaleRead()                  { m.stale.Inc() }

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
