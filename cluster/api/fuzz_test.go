package api

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// FuzzReadError: whatever an agent (or something posing as one) answers,
// the caller gets an error, never a panic nor a nil error.
func FuzzReadError(f *testing.F) {
	f.Add(`{"error":"no such process","errno":"ENOENT"}`)
	f.Add(`{"error":"x","code":"not_leader"}`)
	f.Add(`{"errno":"EBOGUS"}`)
	f.Add(`garbage`)
	f.Fuzz(func(t *testing.T, body string) {
		resp := &http.Response{Status: "500 Internal Server Error", StatusCode: 500,
			Body: io.NopCloser(strings.NewReader(body))}
		if err := ReadError(resp); err == nil {
			t.Fatalf("ReadError(%q) = %v", body, err)
		}
	})
}
