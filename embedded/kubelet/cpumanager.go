package kubelet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"k8s.io/utils/cpuset"

	"github.com/kubox/kubox/internal/fsutil"
)

// CPU manager policies kubox accepts.
const (
	CPUManagerNone   = "none"
	CPUManagerStatic = "static"
)

// Defaults for reserved resources, sized for small edge boxes: kubox's
// own processes (etcd, control plane, kubelet, containerd) idle near
// 400 MB and a tenth of a CPU; the OS gets the same again. With the static
// CPU manager policy and no reserved-cpus, the CPU reservation rounds up
// to one whole CPU, which the static policy then keeps out of exclusive
// assignment.
var (
	DefaultSystemReserved = map[string]string{"cpu": "100m", "memory": "256Mi"}
	DefaultKubeReserved   = map[string]string{"cpu": "100m", "memory": "256Mi"}
)

// cpuManager sets the CPU manager policy and reserved resources on c.
func (k *Kubelet) cpuManager(c *kubeletv1beta1.KubeletConfiguration) {
	c.CPUManagerPolicy = k.policy()
	c.ReservedSystemCPUs = k.cfg.ReservedCPUs
	c.SystemReserved = k.cfg.SystemReserved
	c.KubeReserved = k.cfg.KubeReserved
}

func (k *Kubelet) policy() string {
	if k.cfg.CPUManagerPolicy == "" {
		return CPUManagerNone
	}
	return k.cfg.CPUManagerPolicy
}

// cpuManagerState is the part of the kubelet's <root>/cpu_manager_state
// kubox reads.
type cpuManagerState struct {
	PolicyName string `json:"policyName"`
}

// retireStaleCPUManagerState moves <root>/cpu_manager_state aside when it
// was written under another policy. The kubelet refuses to start on such a
// file ("configured policy differs from state checkpoint"); other
// distributions leave the operator to find and delete it. Nothing is
// drained: pods keep running and the kubelet re-admits them under the new
// policy.
func (k *Kubelet) retireStaleCPUManagerState() error {
	path := filepath.Join(k.cfg.RootDir, "cpu_manager_state")
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read CPU manager state: %w", err)
	}
	var st cpuManagerState
	reason := ""
	if err := json.Unmarshal(data, &st); err != nil {
		reason = "unreadable"
	} else if st.PolicyName != k.policy() {
		reason = "written under policy " + st.PolicyName
	}
	if reason == "" {
		return nil
	}
	old, err := fsutil.MoveAside(path, time.Now())
	if err != nil {
		return fmt.Errorf("move stale CPU manager state aside (%s): %w", reason, err)
	}
	k.log().Info("CPU manager policy changed: moved the old CPU manager state aside", "policy", k.policy(), "old_state", reason, "moved_to", old)
	return nil
}

// CheckPolicy returns a one-line error unless policy is one kubox accepts.
func CheckPolicy(policy string) error {
	if policy != CPUManagerNone && policy != CPUManagerStatic {
		return fmt.Errorf("--cpu-manager-policy %q: want none or static", policy)
	}
	return nil
}

// CheckReservedCPUs returns a one-line error unless s is empty or a cpuset
// of this host, such as "0" or "0-1,4".
func CheckReservedCPUs(s string) error {
	if s == "" {
		return nil
	}
	set, err := cpuset.Parse(s)
	if err != nil || set.IsEmpty() {
		return fmt.Errorf("--reserved-cpus %q: not a CPU list such as 0 or 0-1,4", s)
	}
	if max := set.List()[set.Size()-1]; max >= runtime.NumCPU() {
		return fmt.Errorf("--reserved-cpus %q: CPU %d does not exist on this host (it has %d CPUs, 0-%d)", s, max, runtime.NumCPU(), runtime.NumCPU()-1)
	}
	return nil
}

// ParseReserved parses "cpu=100m,memory=256Mi" (flag) into a map; "" and
// "none" give nil (nothing reserved).
func ParseReserved(flag, s string) (map[string]string, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return nil, fmt.Errorf("--%s %q: want name=quantity pairs such as cpu=100m,memory=256Mi", flag, s)
		}
		switch k {
		case "cpu", "memory", "ephemeral-storage", "pid":
		default:
			return nil, fmt.Errorf("--%s: unknown resource %q (want cpu, memory, ephemeral-storage or pid)", flag, k)
		}
		if _, err := resource.ParseQuantity(v); err != nil {
			return nil, fmt.Errorf("--%s: %s=%q is not a quantity such as 100m or 256Mi", flag, k, v)
		}
		out[k] = v
	}
	return out, nil
}
