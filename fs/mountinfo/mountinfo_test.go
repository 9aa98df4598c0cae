package mountinfo

import "testing"

func TestMounted(t *testing.T) {
	if !Mounted("/") {
		t.Error("/ is not reported mounted")
	}
	if !Mounted("/proc") {
		t.Error("/proc is not reported mounted")
	}
	if Mounted(t.TempDir()) {
		t.Error("a fresh directory is reported mounted")
	}
}

func TestUnescape(t *testing.T) {
	if got := unescape(`/a\040b\134c\011d`); got != "/a b\\c\td" {
		t.Fatalf("unescape = %q", got)
	}
}
