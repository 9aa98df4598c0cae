package configs

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// A lab's limits are lists: one value for every node, or one per node
// (node1 first), so that a lab can have nodes of different sizes.

// ParseCPUQuotas parses lab.cpu_quota: CPUs per node ("0.5", or
// "1,0.5,0.5,0.5"); 0 is no limit.
func ParseCPUQuotas(s string) ([]float64, error) {
	var out []float64
	for _, f := range listFields(s) {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
			return nil, fmt.Errorf("lab.cpu_quota %q: want CPUs >= 0 per node, e.g. 0.5 or 1,0.5,0.5", s)
		}
		out = append(out, v)
	}
	return out, nil
}

// ParseMemLimits parses lab.mem_limit: bytes per node with an optional
// binary suffix K, M, G or T ("512M", or "512M,2G,2G"); 0 is no limit.
func ParseMemLimits(s string) ([]uint64, error) {
	var out []uint64
	for _, f := range listFields(s) {
		v, ok := parseBytes(f)
		if !ok {
			return nil, fmt.Errorf("lab.mem_limit %q: want bytes per node, e.g. 512M or 512M,2G,2G (0: no limit)", s)
		}
		out = append(out, v)
	}
	return out, nil
}

// listFields splits a comma-separated list; an empty string is an
// empty list.
func listFields(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	fs := strings.Split(s, ",")
	for i := range fs {
		fs[i] = strings.TrimSpace(fs[i])
	}
	return fs
}

// parseBytes reads "512M", "1.5G", "512MiB" or "4096": K, M, G and T are
// powers of 1024, as cgroups count.
func parseBytes(s string) (uint64, bool) {
	num := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(s), "B"), "I")
	mult := 1.0
	if n := len(num); n > 0 {
		if i := strings.IndexByte("KMGT", num[n-1]); i >= 0 {
			mult = math.Pow(1024, float64(i+1))
			num = num[:n-1]
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || v*mult >= 1<<62 {
		return 0, false
	}
	return uint64(v * mult), true
}
