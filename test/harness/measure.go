package harness

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Client returns a client-go client from the node's admin kubeconfig, for
// measurements that must not pay for a kubectl process per poll.
func (n *Node) Client() (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", n.Kubeconfig)
	if err != nil {
		return nil, err
	}
	rc.Timeout = 2 * time.Second
	return kubernetes.NewForConfig(rc)
}

// WaitFor polls cond every interval until it returns true or ctx ends.
func WaitFor(ctx context.Context, interval time.Duration, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
	return nil
}

// pollWithClient polls cond with a client made as soon as the server has
// written its kubeconfig.
func (n *Node) pollWithClient(ctx context.Context, cond func(kubernetes.Interface) bool) error {
	var cs kubernetes.Interface
	return WaitFor(ctx, 20*time.Millisecond, func() bool {
		if cs == nil {
			if _, err := os.Stat(n.Kubeconfig); err != nil {
				return false
			}
			c, err := n.Client()
			if err != nil {
				return false
			}
			cs = c
		}
		return cond(cs)
	})
}

// WaitReadyz waits until the kubeconfig exists and /readyz answers ok.
func (n *Node) WaitReadyz(ctx context.Context) error {
	return n.pollWithClient(ctx, func(cs kubernetes.Interface) bool {
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok"
	})
}

// WaitNodeReadyFast waits for a node whose Ready condition is true and was
// reported by a kubelet heartbeat at or after since (the node's status in
// etcd still says Ready after a restart until the kubelet reports again).
// It polls through client-go.
func (n *Node) WaitNodeReadyFast(ctx context.Context, since time.Time) error {
	since = since.Truncate(time.Second)
	return n.pollWithClient(ctx, func(cs kubernetes.Interface) bool {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		for _, node := range nodes.Items {
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && !c.LastHeartbeatTime.Time.Before(since) {
					return true
				}
			}
		}
		return false
	})
}

// Memory is resident and proportional set size in bytes.
type Memory struct{ RSS, PSS int64 }

// TreeMemory sums RSS and PSS over pid and all its descendants, and returns
// the per-process figures too (by command name).
func TreeMemory(pid int) (Memory, map[string]Memory, error) {
	var total Memory
	per := map[string]Memory{}
	for _, p := range descendants(pid) {
		m, err := processMemory(p)
		if err != nil {
			continue // exited meanwhile
		}
		name := fmt.Sprintf("%s[%d]", processName(p), p)
		per[name] = m
		total.RSS += m.RSS
		total.PSS += m.PSS
	}
	if len(per) == 0 {
		return total, per, fmt.Errorf("no process %d", pid)
	}
	return total, per, nil
}

// processName is the command name, with the verb for kubox's own
// processes ("kubox server", "kubox kubelet").
func processName(pid int) string {
	if argv, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
		if args := strings.Split(string(argv), "\x00"); len(args) > 1 && filepath.Base(args[0]) == "kubox" {
			return "kubox " + args[1]
		}
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(comm))
}

func processMemory(pid int) (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return Memory{}, err
	}
	defer f.Close()
	var m Memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "Rss:":
			m.RSS = kb * 1024
		case "Pss:":
			m.PSS = kb * 1024
		}
	}
	return m, sc.Err()
}

// descendants returns pid and every process below it.
func descendants(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command name, which may contain spaces.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], p)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}
