package peer

import (
	"context"
	"time"
)

// Retry calls try until it says it is done and returns try's error then,
// pausing every between calls. If ctx ends first it returns the error of
// the last try, or ctx.Err() if that try had none: an error that try
// would have retried comes back only when ctx ended.
func Retry(ctx context.Context, every time.Duration, try func() (done bool, err error)) error {
	for {
		done, err := try()
		if done {
			return err
		}
		select {
		case <-ctx.Done():
			if err == nil {
				return ctx.Err()
			}
			return err
		case <-time.After(every):
		}
	}
}
