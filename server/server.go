package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubox/kubox/backup"
	"github.com/kubox/kubox/component"
	"github.com/kubox/kubox/embedded/etcd"
	"github.com/kubox/kubox/internal/diskspace"
	"github.com/kubox/kubox/internal/fatal"
	"github.com/kubox/kubox/internal/mounts"
)

// Timeouts for a whole start (unless Config.StartTimeout says otherwise)
// and a whole stop.
const (
	StartTimeout = 5 * time.Minute
	StopTimeout  = 25 * time.Second
)

// Server is one kubox node.
type Server struct {
	cfg   Config
	paths Paths
	log   *slog.Logger
	lock  *Lock
	sup   *component.Supervisor

	notify          Notifier
	fatals          *fatal.Catcher
	adminKubeconfig string
	// created is when New ran: temp files older than that are no write of
	// this process (see sweepTemp).
	created time.Time
	// live, once the node is ready, tells whether the apiserver answers
	// /livez; the systemd watchdog is pinged only while it does.
	live atomic.Pointer[func(context.Context) error]
}

// Notifier is told how the node is doing; *systemd.Notifier tells systemd
// (STATUS while starting, READY once the apiserver serves and the node is
// registered, STOPPING, watchdog pings).
type Notifier interface {
	Status(msg string)
	Ready(msg string)
	Stopping(msg string)
	RunWatchdog(ctx context.Context, healthy func(context.Context) error)
}

type nopNotifier struct{}

func (nopNotifier) Status(string)                                            {}
func (nopNotifier) Ready(string)                                             {}
func (nopNotifier) Stopping(string)                                          {}
func (nopNotifier) RunWatchdog(context.Context, func(context.Context) error) {}

// SetNotifier makes the server report its progress to n.
func (s *Server) SetNotifier(n Notifier) { s.notify = n }

// CatchFatal makes the fatal exits of upstream code in this process, as
// reported by c, stop the node cleanly: Run then returns the *fatal.Error.
// The caller routes the libraries' exits to c (klog.OsExit); etcd's logger
// gets c's hook from the plan.
func (s *Server) CatchFatal(c *fatal.Catcher) { s.fatals = c }

// New returns a server for a completed cfg.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	return &Server{cfg: cfg, paths: cfg.Paths(), log: log, notify: nopNotifier{}, created: time.Now()}, nil
}

// Preflight checks what can be checked before any state is touched, then
// takes the data dir's lock. Call Release when done.
func (s *Server) Preflight() error {
	if os.Geteuid() != 0 {
		return errors.New("kubox server must run as root (it manages containers, mounts and networking): run it with sudo or as root")
	}
	// Before anything creates the data dir: a restore cut off between its
	// renames leaves none, and a new one would be a new cluster with new
	// CAs. The restore lock is held until the data dir's own is taken, so
	// no restore starts in between.
	unlockRestore, err := backup.LockRestore(s.cfg.DataDir, func() {
		s.log.Info("waiting for a kubox restore into the data dir to end", "data_dir", s.cfg.DataDir)
	})
	if err != nil {
		return err
	}
	defer unlockRestore()
	msg, err := backup.RecoverRestore(s.cfg.DataDir, backup.ForServer)
	if err != nil {
		return err
	}
	if msg != "" {
		s.log.Warn("restore: " + msg)
	}
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir %s: %w", s.cfg.DataDir, err)
	}
	// With less the disk guard would stop kubox again at once: refuse with
	// its line, and systemd tries again later.
	if err := diskspace.CheckStart(s.cfg.DataDir); err != nil {
		return err
	}
	lock, err := AcquireLock(s.paths.Lock)
	if err != nil {
		return err
	}
	if err := s.cfg.CheckPorts(); err != nil {
		lock.Release()
		return err
	}
	s.lock = lock
	return nil
}

// Release drops the data dir lock.
func (s *Server) Release() { s.lock.Release() }

// Run starts the node, serves until ctx ends or a component fails, then
// stops everything. It returns the first failure.
func (s *Server) Run(ctx context.Context) error {
	begin := time.Now()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if s.fatals != nil {
		go func() {
			select {
			case e := <-s.fatals.Reports():
				s.log.Error("fatal error in a component; stopping", "component", e.Component, "err", e.Cause)
				cancel(e)
			case <-ctx.Done():
			}
		}()
	}
	wdCtx, stopWatchdog := context.WithCancel(context.Background())
	defer stopWatchdog()
	go s.notify.RunWatchdog(wdCtx, s.healthy)
	s.sweepTemp()
	s.notify.Status("preparing certificates and components")
	in, undo, err := s.prepare(ctx)
	if err != nil {
		s.notify.Stopping("failed: " + err.Error())
		return err
	}
	steps, err := plan(in)
	if err != nil {
		err = undo(err)
		s.notify.Stopping("failed: " + err.Error())
		return err
	}
	// Each component starts once what it needs is ready: etcd and
	// containerd side by side, the apiserver's clients together.
	s.sup = &component.Supervisor{Log: s.log, Status: s.notify.Status, Needs: map[string][]string{}}
	for _, st := range steps {
		s.sup.Components = append(s.sup.Components, st.Component)
		s.sup.Needs[st.Name()] = st.needs
	}
	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	startTimeout := s.cfg.StartTimeout
	if startTimeout <= 0 {
		startTimeout = StartTimeout
	}
	startCtx, cancelStart := context.WithTimeout(ctx, startTimeout)
	err = s.sup.Start(startCtx, runCtx)
	cancelStart()
	startFailed := err != nil
	if fe := caughtFatal(ctx); fe != nil {
		s.notify.Stopping("fatal error; stopping: " + fe.Error())
		err = fe
	} else if err != nil && ctx.Err() != nil {
		// Asked to stop while starting: a normal stop, not a failure.
		s.log.Info("stopping before start completed", "reason", context.Cause(ctx))
		s.notify.Stopping("stopping before start completed")
		err = nil
	} else if err == nil {
		took := time.Since(begin).Round(time.Millisecond)
		s.log.Info("kubox is ready", "node", s.cfg.NodeName, "took", took, "kubeconfig", s.cfg.WriteKubeconfig)
		s.live.Store(s.apiserverLive())
		s.notify.Ready(fmt.Sprintf("kubox is ready: node %s, started in %s", s.cfg.NodeName, took))
		err = s.sup.Wait(ctx)
		s.live.Store(nil)
		if fe := caughtFatal(ctx); fe != nil {
			s.notify.Stopping("fatal error; stopping: " + fe.Error())
			err = fe
		} else if err != nil {
			s.log.Error("component failed; stopping", "err", err)
			s.notify.Stopping("component failed; stopping: " + err.Error())
		} else {
			s.log.Info("stopping")
			s.notify.Stopping("stopping")
		}
	} else {
		s.notify.Stopping("start failed; stopping: " + err.Error())
	}
	stopCtx, cancelStop := context.WithTimeout(context.Background(), StopTimeout)
	defer cancelStop()
	stopErr := s.sup.Stop(stopCtx)
	cancelRun()
	if s.cfg.StopPodsOnExit || s.cfg.DisableAgent {
		// Kept pods still use their rootfs and volume mounts, and the next
		// kubox adopts them as they are.
		s.cleanupMounts()
	}
	if startFailed {
		err = undo(err)
	}
	if errors.Is(err, etcd.ErrRemoved) {
		if stopErr != nil {
			s.log.Warn("stop after the removal", "err", stopErr)
		}
		return &RemovedError{DataDir: s.cfg.DataDir}
	}
	return errors.Join(err, stopErr)
}

// caughtFatal is the fatal exit that ended ctx, if one did.
func caughtFatal(ctx context.Context) *fatal.Error {
	var fe *fatal.Error
	if errors.As(context.Cause(ctx), &fe) {
		return fe
	}
	return nil
}

// healthy is the watchdog's check: while starting and stopping the process
// is alive by definition; once ready, the apiserver must answer /livez.
func (s *Server) healthy(ctx context.Context) error {
	if live := s.live.Load(); live != nil {
		return (*live)(ctx)
	}
	return nil
}

// apiserverLive returns a check of the apiserver's /livez through the admin
// kubeconfig.
func (s *Server) apiserverLive() *func(context.Context) error {
	client, err := adminClient(s.adminKubeconfig)
	check := func(ctx context.Context) error {
		if err != nil {
			return err
		}
		_, err := client.Discovery().RESTClient().Get().AbsPath("/livez").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("apiserver /livez: %w", err)
		}
		return nil
	}
	return &check
}

// cleanupMounts unmounts what the kubelet and containerd left behind (pod
// volumes, sandbox shm, the kubelet's bind mount of its root dir), so a
// stopped kubox leaves no mount under its dirs.
func (s *Server) cleanupMounts() {
	for _, dir := range []string{s.paths.Kubelet, s.paths.ContainerdState, s.paths.ContainerdRoot} {
		n, err := mounts.UnmountUnder(dir)
		if err != nil {
			s.log.Warn("could not unmount everything", "dir", dir, "err", err)
		}
		if n > 0 {
			s.log.Info("unmounted leftover mounts", "dir", dir, "count", n)
		}
	}
}

func adminClient(kubeconfig string) (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", kubeconfig, err)
	}
	rc.UserAgent = "kubox"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("client from %s: %w", kubeconfig, err)
	}
	return client, nil
}

// systemdResolvConf lists systemd-resolved's real upstreams; its stub at
// 127.0.0.53 in /etc/resolv.conf is unreachable from a pod.
const systemdResolvConf = "/run/systemd/resolve/resolv.conf"
