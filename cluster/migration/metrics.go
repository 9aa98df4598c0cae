package migration

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the moves this node started as the source.
type metrics struct {
	migrations *prometheus.CounterVec
	frozen     prometheus.Histogram
	total      prometheus.Histogram
	bytes      prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
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
	}
}

// Collectors are the Mover's metrics, for the agent's registry.
func (m *Mover) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.metrics.migrations, m.metrics.frozen, m.metrics.total, m.metrics.bytes}
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
