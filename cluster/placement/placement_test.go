package placement

import (
	"reflect"
	"testing"
)

func TestLeastLoaded(t *testing.T) {
	for _, tc := range []struct {
		name    string
		nodes   []Node
		current string
		want    string
	}{
		{"most idle", []Node{{Name: "a", Up: true, CPUs: 2, Load: 1.5}, {Name: "b", Up: true, CPUs: 2, Load: 0.2}}, "a", "b"},
		{"current wins ties", []Node{{Name: "a", Up: true, CPUs: 2, Load: 1}, {Name: "b", Up: true, CPUs: 2, Load: 1}}, "a", "a"},
		{"current wins near-ties", []Node{{Name: "a", Up: true, CPUs: 2, Load: 1.1}, {Name: "b", Up: true, CPUs: 2, Load: 1}}, "a", "a"},
		{"down skipped", []Node{{Name: "a", Up: true, CPUs: 2, Load: 2}, {Name: "b", CPUs: 8}}, "a", "a"},
		{"blocked skipped", []Node{{Name: "a", Up: true, CPUs: 2, Load: 2}, {Name: "b", Up: true, Block: true, CPUs: 8}}, "a", "a"},
		{"more CPUs", []Node{{Name: "a", Up: true, CPUs: 1, Load: 0}, {Name: "b", Up: true, CPUs: 4, Load: 2}}, "c", "b"},
		{"none", []Node{{Name: "a"}}, "a", ""},
	} {
		if got := LeastLoaded(tc.nodes, tc.current); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestAdminMoves(t *testing.T) {
	procs := []Proc{
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
