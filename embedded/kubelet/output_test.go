package kubelet

import (
	"strings"
	"testing"
)

// The cause of a kubelet's exit is the line that says it best, whatever
// follows it (a Fatal's goroutine dump), and every line is passed on.
func TestOutputCause(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"os.Exit after an error", "I1202 05:00:00.000001    4711 server.go:1] \"Starting\"\n" +
			"E1202 05:00:01.000001    4711 server.go:209] \"Failed to listen and serve\" err=\"listen tcp 0.0.0.0:10250: bind: address already in use\"\n",
			`"Failed to listen and serve" err="listen tcp 0.0.0.0:10250: bind: address already in use"`},
		{"fatal with a dump", "E1202 05:00:00.000001    4711 a.go:1] early\nF1202 05:00:02.000001    4711 csi_plugin.go:1] Failed to initialize CSINode after retrying\ngoroutine 1 [running]:\nE1202 05:00:03.000001    4711 a.go:1] later\n",
			"Failed to initialize CSINode after retrying"},
		{"own last line wins", "F1202 05:00:02.000001    4711 x.go:1] fatal\nkubelet: failed to run Kubelet: no CRI\n", "failed to run Kubelet: no CRI"},
		{"panic", "panic: runtime error: index out of range\n\ngoroutine 1 [running]:\nmain.main()\n", "panic: runtime error: index out of range"},
		{"nothing ranked", "plain\nlast words\n\n", "last words"},
	} {
		o := newOutput()
		var sink strings.Builder
		o.copy(strings.NewReader(tc.in), &sink)
		if got := o.cause(); got != tc.want {
			t.Errorf("%s: cause %q, want %q", tc.name, got, tc.want)
		}
		if sink.String() != tc.in {
			t.Errorf("%s: passed on %q, want %q", tc.name, sink.String(), tc.in)
		}
	}
}
