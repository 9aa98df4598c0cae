package configs

import (
	"fmt"
	"testing"
)

func TestLabLimitLists(t *testing.T) {
	quotas := []struct {
		in   string
		want string // "" for an error
	}{
		{"0.5", "[0.5]"},
		{"1, 0.5,0.5,0.5", "[1 0.5 0.5 0.5]"},
		{"0", "[0]"},
		{"", "[]"},
		{"-1", ""},
		{"1,,2", ""},
		{"half", ""},
	}
	for _, c := range quotas {
		got, err := ParseCPUQuotas(c.in)
		if s := fmt.Sprint(got); c.want == "" && err == nil || c.want != "" && (err != nil || s != c.want) {
			t.Errorf("ParseCPUQuotas(%q) = %v, %v; want %s", c.in, got, err, c.want)
		}
	}
	mems := []struct {
		in   string
		want string
	}{
		{"512M", "[536870912]"},
		{"512MiB,2G,1.5g", "[536870912 2147483648 1610612736]"},
		{"4096", "[4096]"},
		{"64k", "[65536]"},
		{"0", "[0]"},
		{"", "[]"},
		{"-1M", ""},
		{"12X", ""},
		{"M", ""},
		{"9999999T", ""},
	}
	for _, c := range mems {
		got, err := ParseMemLimits(c.in)
		if s := fmt.Sprint(got); c.want == "" && err == nil || c.want != "" && (err != nil || s != c.want) {
			t.Errorf("ParseMemLimits(%q) = %v, %v; want %s", c.in, got, err, c.want)
		}
	}
}
