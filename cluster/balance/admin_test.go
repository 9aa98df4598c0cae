package balance

import (
	"reflect"
	"testing"
)

func TestAdminMoves(t *testing.T) {
	procs := []AdminProc{
		{CPID: 1, Node: "b", Home: "a", Running: true},             // ours, away
		{CPID: 2, Node: "a", Home: "b", Running: true},             // a guest here
		{CPID: 3, Node: "b", Home: "a", Running: true, Lock: true}, // ours, locked
		{CPID: 4, Node: "a", Home: "a", Running: true},             // at home
		{CPID: 5, Node: "c", Home: "a"},                            // ours, moving
		{CPID: 6, Node: "c", Home: "b", Running: true},             // someone else's
	}
	for _, tc := range []struct {
		sw   Switches
		want []HomeMove
	}{
		{Switches{}, nil},
		{Switches{Bring: true}, []HomeMove{{CPID: 1, Bring: true}}},
		{Switches{Expel: true}, []HomeMove{{CPID: 2, Expel: true}}},
		{Switches{Bring: true, Expel: true}, []HomeMove{{CPID: 1, Bring: true}, {CPID: 2, Expel: true}}},
	} {
		if got := AdminMoves("a", tc.sw, procs); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%+v: %+v, want %+v", tc.sw, got, tc.want)
		}
	}
}
