package jobs

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzRunRequest: the local API's run request, from any user, is either
// refused or asks for something startable within the bounds: a command,
// argv and environment within MaxArgEnv, a working directory within
// PATH_MAX, a terminal only for an attached caller and of a real size.
func FuzzRunRequest(f *testing.F) {
	f.Add(`{"argv":["sleep","1"],"dir":"/","env":["A=b"]}`)
	f.Add(`{"argv":["sh"],"attach":true,"tty":true,"size":{"rows":0,"cols":80}}`)
	f.Add(`{"argv":[],"tty":true}`)
	f.Add(`{"argv":["x"],"dir":"` + strings.Repeat("d", 5000) + `"}`)
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest(http.MethodPost, "/v1/run", strings.NewReader(body))
		req, err := decodeRun(httptest.NewRecorder(), r)
		if err != nil {
			return
		}
		switch {
		case len(req.Argv) == 0:
			t.Fatal("accepted an empty command")
		case tooBig(req.Argv, req.Env) != nil:
			t.Fatal("accepted argv+env over MaxArgEnv")
		case len(req.Dir) > unix.PathMax:
			t.Fatal("accepted a directory over PATH_MAX")
		case req.TTY && (!req.Attach || req.Size.Rows == 0 || req.Size.Cols == 0):
			t.Fatalf("accepted a terminal %+v", req)
		}
	})
}
