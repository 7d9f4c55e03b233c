package server

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kubox/kubox/component"
)

// afterNode holds a component's Start back, in the background, until the
// kubelet has registered this node (Testing.ControllerManagerAfterNode): a
// test's way to have the controller manager initialise its volume plugins
// after the kubelet's. Its place in the plan, and so its needs, stay.
type afterNode struct {
	component.Component
	client kubernetes.Interface
	node   string
	wait   component.Step
	failed chan error
}

var (
	_ component.Initializer = (*afterNode)(nil)
	_ component.Failer      = (*afterNode)(nil)
)

func (a *afterNode) Init(ctx context.Context) error {
	if in, ok := a.Component.(component.Initializer); ok {
		return in.Init(ctx)
	}
	return nil
}

func (a *afterNode) Start(ctx context.Context) error {
	a.wait.Go(ctx, func(ctx context.Context) error {
		err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			_, err := a.client.CoreV1().Nodes().Get(ctx, a.node, metav1.GetOptions{})
			return err == nil, nil
		})
		if err != nil {
			return fmt.Errorf("wait for node %s: %w", a.node, err)
		}
		if err := a.Component.Start(ctx); err != nil {
			a.failed <- fmt.Errorf("start: %w", err)
			return err
		}
		if f, ok := a.Component.(component.Failer); ok {
			go func() {
				select {
				case err := <-f.Failed():
					a.failed <- err
				case <-ctx.Done():
				}
			}()
		}
		return nil
	})
	return nil
}

func (a *afterNode) Failed() <-chan error { return a.failed }

func (a *afterNode) Stop(ctx context.Context) error {
	if err := a.wait.Stop(ctx); err != nil {
		return err
	}
	return a.Component.Stop(ctx)
}
