package telemetry

import "testing"

// Speeds are positive multiples of 10% of the unit, and two measures of
// one CPU read at most one step apart.
func TestMeasureSpeed(t *testing.T) {
	a, b := MeasureSpeed(), MeasureSpeed()
	for _, s := range []int{a, b} {
		if s <= 0 || s%(SpeedUnit/10) != 0 {
			t.Fatalf("speed %d is not a positive multiple of %d", s, SpeedUnit/10)
		}
	}
	if lo, hi := min(a, b), max(a, b); hi-lo > SpeedUnit/10 {
		t.Fatalf("two measures of one CPU: %d and %d", a, b)
	}
}
