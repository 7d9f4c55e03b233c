package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kubox/kubox/component"
	"github.com/kubox/kubox/internal/fsutil"
)

// rollbackMember removes the etcd member a failed join added, so the
// cluster is left as it was. It returns what it did, for the user.
func (s *Server) rollbackMember(res *joinResult) string {
	id := fmt.Sprintf("%x", res.memberID)
	failed := func(err error) string {
		s.log.Error("join failed and the etcd member it added could not be removed", "member", id, "err", err)
		return fmt.Sprintf("the etcd member %s it added could not be removed (%v): run `kubox node remove %s` on a member", id, err, s.cfg.NodeName)
	}
	cli, err := etcdClient(res.etcdEndpoints, res.etcdTLS)
	if err != nil {
		return failed(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), joinTimeout)
	defer cancel()
	if _, err := cli.MemberRemove(ctx, res.memberID); err != nil && !errors.Is(err, rpctypes.ErrMemberNotFound) {
		return failed(err)
	}
	s.log.Info("join failed: removed the etcd member it had added", "member", id)
	return "the etcd member it added was removed"
}

// undoJoin is called when a fresh join fails to start, once nothing runs
// any more: the member goes, and the local etcd data and join record are
// moved aside so the next start joins afresh. It returns cause wrapped in
// one line saying what was undone.
func (s *Server) undoJoin(res *joinResult, cause error) error {
	done := []string{s.rollbackMember(res)}
	now := time.Now()
	var moved []string
	for _, p := range []string{s.paths.Etcd, filepath.Join(s.cfg.DataDir, joinStateFile)} {
		if ok, _ := fsutil.Exists(p); ok {
			if to, err := fsutil.MoveAside(p, now); err != nil {
				s.log.Error("could not move aside", "path", p, "err", err)
				done = append(done, fmt.Sprintf("%s could not be moved aside (%v): move it yourself", p, err))
			} else {
				s.log.Info("moved aside", "path", p, "to", to)
				moved = append(moved, filepath.Base(p))
			}
		}
	}
	if len(moved) > 0 {
		done = append(done, strings.Join(moved, " and ")+" moved aside in "+s.cfg.DataDir)
	}
	if cause == nil {
		return fmt.Errorf("join stopped before it completed (%s): run the same command again to join", strings.Join(done, "; "))
	}
	return fmt.Errorf("join failed (%s); fix the cause and run the same command again: %w", strings.Join(done, "; "), cause)
}

// newPromoter returns the step that turns this box's new learner into a
// voter once it has caught up.
func newPromoter(res *joinResult, log *slog.Logger) component.Component {
	p := &promoter{res: res, log: log.With("component", "etcd-promote")}
	return component.OneShot("etcd-promote", p.promote)
}

type promoter struct {
	res *joinResult
	log *slog.Logger
}

func (p *promoter) promote(ctx context.Context) error {
	cli, err := etcdClient(p.res.etcdEndpoints, p.res.etcdTLS)
	if err != nil {
		return err
	}
	defer cli.Close()
	begin, said := time.Now(), time.Time{}
	var last error
	err = wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		pctx, cancel := context.WithTimeout(ctx, joinTimeout)
		_, last = cli.MemberPromote(pctx, p.res.memberID)
		cancel()
		if last == nil {
			return true, nil
		}
		if time.Since(said) > 5*time.Second {
			p.log.Info("waiting for this box's etcd learner to catch up before promoting it", "last", last)
			said = time.Now()
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("promote this member: %w (last: %v)", context.Cause(ctx), last)
	}
	p.log.Info("this box's etcd member caught up and is now a voter", "took", time.Since(begin).Round(time.Millisecond))
	return nil
}

// newPublisher returns the step that keeps JoinSecret and the RBAC that
// lets join tokens read it up to date, at every start of every box: it
// publishes the cluster's settings, removes what must not be there (CA keys
// an older kubox published, bundles of tokens gone or expired) and deletes
// the single-use token this box joined with, now that it is up.
func newPublisher(client kubernetes.Interface, settings ClusterSettings, joinState string, log *slog.Logger) component.Component {
	p := &publisher{client: client, settings: settings, joinState: joinState, log: log.With("component", "join-bundle")}
	return component.OneShot("join-bundle", p.run)
}

type publisher struct {
	client    kubernetes.Interface
	settings  ClusterSettings
	joinState string // join.json of this box
	log       *slog.Logger
}

func (p *publisher) run(ctx context.Context) error {
	var last error
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		last = p.publish(ctx)
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("publish the join bundle: %w (last: %v)", context.Cause(ctx), last)
	}
	return nil
}

func (p *publisher) publish(ctx context.Context) error {
	settings, err := json.Marshal(p.settings)
	if err != nil {
		return err
	}
	const ns = "kube-system"
	secrets := p.client.CoreV1().Secrets(ns)
	cur, err := secrets.Get(ctx, JoinSecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		sec := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: JoinSecret, Namespace: ns, Labels: map[string]string{"app.kubernetes.io/managed-by": "kubox"}},
			Type:       corev1.SecretTypeOpaque, Data: map[string][]byte{clusterKey: settings},
		}
		if _, err := secrets.Create(ctx, sec, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	} else if err != nil {
		return err
	} else {
		live, err := liveTokens(ctx, p.client)
		if err != nil {
			return err
		}
		stale, legacy := staleJoinKeys(cur.Data, live)
		patch := map[string][]byte{}
		for _, k := range stale {
			patch[k] = nil
		}
		if string(cur.Data[clusterKey]) != string(settings) {
			patch[clusterKey] = settings
		}
		if len(patch) > 0 {
			if err := patchJoinSecret(ctx, p.client, patch); err != nil {
				return fmt.Errorf("update %s: %w", JoinSecret, err)
			}
		}
		if len(legacy) > 0 {
			p.log.Info("removed the plaintext shared PKI an older kubox kept in the join Secret; join tokens now carry it sealed", "secret", ns+"/"+JoinSecret, "keys", len(legacy))
		}
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: joinRole, Namespace: ns},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{JoinSecret}, Verbs: []string{"get"}}},
	}
	if _, err := p.client.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: joinRole, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: joinRole},
		Subjects:   []rbacv1.Subject{{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: JoinGroup}},
	}
	if _, err := p.client.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if id, err := consumeJoinToken(ctx, p.client, p.joinState); err != nil {
		return err
	} else if id != "" {
		p.log.Info("this box is up: deleted the single-use join token it joined with", "token", id)
	}
	return nil
}
