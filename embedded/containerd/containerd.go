// Package containerd runs containerd, carried inside kubox and written to the
// data dir with the other runtime binaries, as a child process of kubox, with
// its root, state and socket kept apart from any containerd the host may have. On stop it stops every pod
// sandbox first, so no container or shim outlives kubox.
package containerd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/apimachinery/pkg/util/wait"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kubox/kubox/airgap"
	"github.com/kubox/kubox/component"
	"github.com/kubox/kubox/internal/childproc"
	"github.com/kubox/kubox/internal/fsutil"
)

// Namespace is the containerd namespace the CRI plugin (and so Kubernetes) uses.
const Namespace = "k8s.io"

// Config says where containerd keeps its files and which runtime pieces it uses.
type Config struct {
	Binary     string // the containerd daemon binary
	Root       string // persistent: images, snapshots
	State      string // runtime state, under /run
	Socket     string
	ConfigFile string
	LogFile    string
	BinDir     string // runc, shim: prepended to the child's PATH
	ShimPath   string
	RuncPath   string
	CNIBinDir  string
	CNIConfDir string

	SandboxImage string
	// ImportImages are image archives imported into the k8s.io namespace
	// (and unpacked) once containerd is up: the pause image at least.
	ImportImages []func() (io.ReadCloser, error)
	// RestrictOOMScoreAdj is needed where root lacks CAP_SYS_RESOURCE.
	RestrictOOMScoreAdj bool
	// StopPodsOnExit stops every pod sandbox before containerd stops.
	StopPodsOnExit bool
	Log            *slog.Logger
}

// Containerd is the containerd child process.
type Containerd struct {
	cfg    Config
	cmd    *exec.Cmd
	exited chan struct{}
	failed chan error
	log    *os.File
	// setup waits for the socket and imports the images kubox ships.
	setup component.Step
}

var (
	_ component.Component   = (*Containerd)(nil)
	_ component.Initializer = (*Containerd)(nil)
	_ component.Readier     = (*Containerd)(nil)
	_ component.Failer      = (*Containerd)(nil)
)

// New returns the component for cfg.
func New(cfg Config) *Containerd {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Containerd{cfg: cfg, exited: make(chan struct{}), failed: make(chan error, 1)}
}

func (c *Containerd) Name() string { return "containerd" }

// Endpoint is the CRI endpoint for the kubelet.
func (c *Containerd) Endpoint() string { return "unix://" + c.cfg.Socket }

func (c *Containerd) Init(ctx context.Context) error {
	for _, d := range []string{c.cfg.Root, c.cfg.State, filepath.Dir(c.cfg.Socket), c.cfg.CNIConfDir, filepath.Dir(c.cfg.ConfigFile), filepath.Dir(c.cfg.LogFile)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	data, err := renderConfig(c.cfg)
	if err != nil {
		return err
	}
	_, err = fsutil.WriteFileIfChanged(c.cfg.ConfigFile, data, 0o600)
	return err
}

func (c *Containerd) Start(ctx context.Context) error {
	logf, err := os.OpenFile(c.cfg.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open containerd log: %w", err)
	}
	c.log = logf
	// A stale socket from a crash would make containerd refuse to start.
	_ = os.Remove(c.cfg.Socket)
	// Not exec.CommandContext: kubox stops containerd itself, in order, in Stop.
	cmd := exec.Command(c.cfg.Binary, "--config", c.cfg.ConfigFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "PATH="+c.cfg.BinDir+":"+os.Getenv("PATH"))
	if os.Getenv("GOGC") == "" {
		// containerd idles at about twice its live heap with Go's
		// default of 100; at 25 its PSS fell by about 3 MB (measured),
		// at no CPU cost worth noticing. A GOGC of kubox's own wins.
		cmd.Env = append(cmd.Env, "GOGC=25")
	}
	// Own process group: a Ctrl-C on kubox's terminal must not reach
	// containerd before kubox has stopped the pods. Parent-death signal:
	// if kubox dies, containerd does not linger.
	exited, err := childproc.Start(cmd)
	if err != nil {
		logf.Close()
		return fmt.Errorf("start containerd: %w", err)
	}
	c.cmd = cmd
	go func() {
		err := <-exited
		close(c.exited)
		if err == nil {
			err = errors.New("containerd exited")
		}
		c.failed <- fmt.Errorf("%w (see %s)", err, c.cfg.LogFile)
	}()
	c.setup.Go(ctx, c.prepare)
	return nil
}

func (c *Containerd) Failed() <-chan error { return c.failed }

// Ready waits until containerd answers, has imported the images kubox
// ships, and its CRI plugin answers.
func (c *Containerd) Ready(ctx context.Context) error { return c.setup.Wait(ctx) }

// prepare waits for the socket to answer, then imports the images kubox
// ships, then waits for the CRI plugin.
func (c *Containerd) prepare(ctx context.Context) error {
	var client *containerd.Client
	err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if _, err := os.Stat(c.cfg.Socket); err != nil {
			return false, nil
		}
		cl, err := containerd.New(c.cfg.Socket, containerd.WithTimeout(2*time.Second), containerd.WithDefaultNamespace(Namespace))
		if err != nil {
			return false, nil
		}
		if _, err = cl.Version(ctx); err != nil {
			cl.Close()
			return false, nil
		}
		client = cl
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("containerd socket %s: %w", c.cfg.Socket, context.Cause(ctx))
	}
	defer client.Close()
	for _, open := range c.cfg.ImportImages {
		if err := importImage(ctx, client, open); err != nil {
			return err
		}
	}
	return c.criReady(ctx)
}

// criReady waits until the CRI plugin answers, as the kubelet does not retry
// its first connection.
func (c *Containerd) criReady(ctx context.Context) error {
	conn, err := c.criConn()
	if err != nil {
		return err
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	var last error
	err = wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, last = rt.Version(ctx, &runtimeapi.VersionRequest{})
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("CRI not answering on %s: %v", c.cfg.Socket, last)
	}
	return nil
}

func (c *Containerd) criConn() (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("unix://"+c.cfg.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connect to CRI at %s: %w", c.cfg.Socket, err)
	}
	return conn, nil
}

func importImage(ctx context.Context, client *containerd.Client, open func() (io.ReadCloser, error)) error {
	r, err := open()
	if err != nil {
		return fmt.Errorf("open image archive: %w", err)
	}
	defer r.Close()
	ctx = namespaces.WithNamespace(ctx, Namespace)
	imgs, err := client.Import(ctx, r, containerd.WithImageLabels(map[string]string{airgap.PinnedLabel: airgap.PinnedValue}))
	if err != nil {
		return fmt.Errorf("import image archive: %w", err)
	}
	for _, i := range imgs {
		img := containerd.NewImage(client, i)
		if err := img.Unpack(ctx, "overlayfs"); err != nil {
			return fmt.Errorf("unpack image %s: %w", i.Name, err)
		}
	}
	return nil
}

// stopPodsAtOnce bounds the pod sandboxes StopPods stops at the same time.
const stopPodsAtOnce = 8

// StopPods stops every pod sandbox through the CRI, which also tears down
// pod networking and lets the shims exit.
func (c *Containerd) StopPods(ctx context.Context) error {
	conn, err := c.criConn()
	if err != nil {
		return err
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	list, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("list pod sandboxes: %w", err)
	}
	// A few at a time: each stop mostly waits (for its containers to die,
	// for the CNI plugin's teardown), so one after another the stop grows
	// with the pod count.
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, stopPodsAtOnce)
	)
	for _, sb := range list.Items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("stop pod sandbox %s (%s/%s): %w", sb.Id, sb.Metadata.GetNamespace(), sb.Metadata.GetName(), err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(list.Items) > 0 {
		c.cfg.Log.Info("stopped pod sandboxes", "count", len(list.Items)-len(errs))
	}
	return errors.Join(errs...)
}

// Stop stops the pods (if configured), then containerd itself: SIGTERM, and
// SIGKILL if it has not exited when ctx ends.
func (c *Containerd) Stop(ctx context.Context) error {
	if c.cmd == nil {
		return nil
	}
	defer c.log.Close()
	var errs []error
	if err := c.setup.Stop(ctx); err != nil {
		errs = append(errs, fmt.Errorf("image import: %w", err))
	}
	if c.cfg.StopPodsOnExit {
		select {
		case <-c.exited:
		default:
			podCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
			// Best effort: a sandbox whose network teardown fails is still
			// stopped, and what remains is killed below.
			if err := c.StopPods(podCtx); err != nil {
				c.cfg.Log.Warn("not every pod stopped cleanly", "err", err)
			}
			cancel()
		}
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-ctx.Done():
		_ = c.cmd.Process.Kill()
		<-c.exited
		errs = append(errs, fmt.Errorf("containerd did not exit on SIGTERM; killed"))
	}
	if c.cfg.StopPodsOnExit {
		if n := killLeftoverShims(c.cfg.Socket, c.cfg.RuncPath); n > 0 {
			c.cfg.Log.Warn("killed shims and containers left after containerd stopped", "processes", n)
		}
	}
	return errors.Join(errs...)
}
