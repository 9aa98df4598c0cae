package telemetry

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestTableKeepsNewest(t *testing.T) {
	tel := NewTable()
	t0 := time.Unix(100, 0)
	tel.Put(Sample{Node: "a", Load: 1, At: t0.Add(time.Second)})
	tel.Put(Sample{Node: "a", Load: 2, At: t0}) // late
	if s, _ := tel.Get("a"); s.Load != 1 {
		t.Fatalf("late sample replaced a newer one: %+v", s)
	}
	tel.Forget("a")
	if _, ok := tel.Get("a"); ok {
		t.Fatal("forgotten node still there")
	}
}

// A pushed sample lands in the table; a body that is not one is refused.
func TestHandle(t *testing.T) {
	tab := NewTable()
	for _, tc := range []struct {
		body string
		code int
	}{
		{`{"node":"n2","load":0.5,"at":"2024-01-01T00:00:00Z"}`, http.StatusOK},
		{`not json`, http.StatusBadRequest},
	} {
		rec := httptest.NewRecorder()
		tab.Handle(rec, httptest.NewRequest(http.MethodPost, Path, strings.NewReader(tc.body)))
		if rec.Code != tc.code {
			t.Errorf("%s: status %d, want %d", tc.body, rec.Code, tc.code)
		}
	}
	s, ok := tab.Get("n2")
	if !ok || s.Load != 0.5 || time.Since(s.Seen) > time.Minute {
		t.Fatalf("pushed sample: %+v, %v", s, ok)
	}
}
