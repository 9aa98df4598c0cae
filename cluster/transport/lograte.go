package transport

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Refusal logs are rate limited: a flood of garbage connections must not
// turn into a flood of log lines. A burst passes, then ten lines a
// second; the next line that passes reports how many were dropped.
const (
	logBurst    = 20
	logInterval = 100 * time.Millisecond
)

// limitedLog logs refusals, one line per connection, within the rate.
type limitedLog struct {
	log *slog.Logger

	mu         sync.Mutex // protects the fields below
	tokens     float64
	last       time.Time
	suppressed int
}

func newLimitedLog(log *slog.Logger) *limitedLog {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &limitedLog{log: log, tokens: logBurst, last: time.Now()}
}

// allow takes a token from the bucket and returns how many lines were
// dropped since the last one that passed, or -1 to drop this line.
func (l *limitedLog) allow() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.tokens += float64(now.Sub(l.last)) / float64(logInterval)
	if l.tokens > logBurst {
		l.tokens = logBurst
	}
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		return -1
	}
	l.tokens--
	n := l.suppressed
	l.suppressed = 0
	return n
}

// refuse logs a refused connection at warning level, if within the rate.
func (l *limitedLog) refuse(msg string, args ...any) {
	n := l.allow()
	if n < 0 {
		return
	}
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.log.Log(context.Background(), slog.LevelWarn, msg, args...)
}
