package kubelet

import (
	"bufio"
	"io"
	"regexp"
	"strings"
	"sync"
)

// output copies the child's output, line by line, to kubox's log stream
// (where the in-process kubelet's klog lines went before) and remembers
// the line that best says why the child would end: its own last line
// ("kubelet: <cause>"), a Go panic, klog's last Fatal, or its last error,
// in that order of preference.
type output struct {
	mu   sync.Mutex
	rank int
	line string
	last string
	done chan struct{}
}

// klogHeader is klog's text prefix: severity, date, time, thread, file:line.
var klogHeader = regexp.MustCompile(`^([IWEF])\d{4} \d{2}:\d{2}:\d{2}\.\d+\s+\d+ [^\]]*\] `)

func newOutput() *output { return &output{done: make(chan struct{})} }

// copy reads r to its end, writing every line to w.
func (o *output) copy(r io.Reader, w io.Writer) {
	defer close(o.done)
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			_, _ = io.WriteString(w, line)
			o.note(strings.TrimRight(line, "\r\n"))
		}
		if err != nil {
			return
		}
	}
}

func (o *output) note(line string) {
	if strings.TrimSpace(line) == "" {
		return
	}
	rank, text := 0, line
	switch {
	case strings.HasPrefix(line, "kubelet: "):
		rank, text = 4, strings.TrimPrefix(line, "kubelet: ")
	case strings.HasPrefix(line, "panic: "):
		rank = 3
	default:
		if m := klogHeader.FindStringSubmatch(line); m != nil {
			switch m[1] {
			case "F":
				rank = 2
			case "E":
				rank = 1
			}
			text = line[len(m[0]):]
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.last = line
	// A Fatal or a panic is followed by goroutine dumps: keep the first.
	if rank > 0 && (rank > o.rank || (rank == o.rank && rank < 2) || rank == 4) {
		o.rank, o.line = rank, text
	}
}

// cause is the remembered line, or the last line if none ranked.
func (o *output) cause() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.line != "" {
		return o.line
	}
	return o.last
}
