package cluster

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the agent's Prometheus metrics, served on the local socket
// at /metrics.
type metrics struct {
	reg        *prometheus.Registry
	migrations *prometheus.CounterVec
	frozen     prometheus.Histogram
	total      prometheus.Histogram
	bytes      prometheus.Counter
	barrier    prometheus.Histogram
	stale      prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		migrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ssi_migrations_total", Help: "Migrations this node started as the source, by outcome.",
		}, []string{"outcome"}),
		frozen: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ssi_migration_frozen_seconds", Help: "How long moved processes were stopped.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
		total: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ssi_migration_total_seconds", Help: "From the request to the process running at its destination.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ssi_migration_bytes_total", Help: "Image bytes sent to destinations.",
		}),
		barrier: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ssi_read_barrier_seconds", Help: "How long reads waited for the read barrier.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		stale: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ssi_stale_reads_total", Help: "Reads served from this replica without the barrier (no quorum).",
		}),
	}
	m.reg.MustRegister(m.migrations, m.frozen, m.total, m.bytes, m.barrier, m.stale,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// moved records one outgoing migration.
func (m *metrics) moved(committed bool, frozen, total time.Duration, bytes int64) {
	outcome := "aborted"
	if committed {
		outcome = "committed"
		m.frozen.Observe(frozen.Seconds())
		m.total.Observe(total.Seconds())
	}
	m.migrations.WithLabelValues(outcome).Inc()
	m.bytes.Add(float64(bytes))
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *metrics) staleRead() { m.stale.Inc() }
