package peer

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestRetry(t *testing.T) {
	errAgain, errFinal := errors.New("again"), errors.New("final")
	calls := 0
	err := Retry(t.Context(), time.Millisecond, func() (bool, error) {
		calls++
		if calls < 3 {
			return false, errAgain
		}
		return true, errFinal
	})
	if !errors.Is(err, errFinal) || calls != 3 {
		t.Fatalf("Retry = %v after %d calls", err, calls)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := Retry(ctx, time.Millisecond, func() (bool, error) { return false, errAgain }); !errors.Is(err, errAgain) {
		t.Fatalf("ctx ended: %v, want the last error", err)
	}
	if err := Retry(ctx, time.Millisecond, func() (bool, error) { return false, nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ctx ended without an error: %v", err)
	}
}
