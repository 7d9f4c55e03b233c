package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kubox/kubox/bootstrap"
)

// Admin does the cluster-membership verbs (`kubox token`, `kubox etcd`,
// `kubox node`) on a running box, with that box's admin credentials.
type Admin struct {
	DataDir        string
	EtcdClientPort int
	NodeName       string // this box's node name, if known
}

// paths is the box's layout; the membership verbs read only its data dir.
func (a *Admin) paths() Paths { return LayoutOf(a.DataDir, "") }

// pki is where the box's certificates and kubeconfigs are.
func (a *Admin) pki() *bootstrap.PKI {
	p := a.paths()
	return bootstrap.Layout(p.PKI, p.Kubeconfigs)
}

func (a *Admin) client() (kubernetes.Interface, error) {
	kc := a.pki().AdminKubeconfig
	if _, err := os.Stat(kc); err != nil {
		return nil, fmt.Errorf("no admin kubeconfig at %s: run this on a box running kubox server (or set --data-dir)", kc)
	}
	return adminClient(kc)
}

// TokenInfo describes a join token without its secret.
type TokenInfo struct {
	ID          string    `json:"id"`
	Expires     time.Time `json:"expires"`
	Expired     bool      `json:"expired"`
	Description string    `json:"description,omitempty"`
	Reusable    bool      `json:"reusable,omitempty"`
}

const (
	tokenSecretType = corev1.SecretType("bootstrap.kubernetes.io/token")
	tokenPrefixName = "bootstrap-token-"
	// reusableLabel marks a token that is not deleted after a join.
	reusableLabel = "kubox.io/reusable-token"
)

// CreateToken creates a join token valid for ttl, with the shared PKI
// sealed for it, and returns it. A token that is not reusable is deleted
// once a box has joined with it.
func (a *Admin) CreateToken(ctx context.Context, ttl time.Duration, description string, reusable bool) (bootstrap.Token, time.Time, error) {
	if ttl <= 0 {
		return bootstrap.Token{}, time.Time{}, fmt.Errorf("--ttl %s: must be positive, e.g. 1h", ttl)
	}
	hash, err := bootstrap.CAHashFile(a.pki().CACert)
	if err != nil {
		return bootstrap.Token{}, time.Time{}, fmt.Errorf("read the cluster CA: %w (run this on a box running kubox server, or set --data-dir)", err)
	}
	client, err := a.client()
	if err != nil {
		return bootstrap.Token{}, time.Time{}, err
	}
	tok, err := bootstrap.NewToken(hash)
	if err != nil {
		return bootstrap.Token{}, time.Time{}, err
	}
	expires := time.Now().Add(ttl).UTC().Truncate(time.Second)
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: tokenPrefixName + tok.ID, Namespace: "kube-system",
			Labels: map[string]string{"app.kubernetes.io/managed-by": "kubox"}},
		Type: tokenSecretType,
		StringData: map[string]string{
			"token-id": tok.ID, "token-secret": tok.Secret, "expiration": expires.Format(time.RFC3339),
			"usage-bootstrap-authentication": "true", "auth-extra-groups": JoinGroup,
			"description": description,
		},
	}
	if reusable {
		sec.Labels[reusableLabel] = "true"
	}
	if _, err := client.CoreV1().Secrets("kube-system").Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		return bootstrap.Token{}, time.Time{}, fmt.Errorf("store the token: %w", err)
	}
	if err := addTokenBundle(ctx, client, a.paths().PKI, tok, reusable); err != nil {
		if derr := deleteJoinToken(ctx, client, tok.ID); derr != nil {
			err = fmt.Errorf("%w (and the token could not be deleted again: %v)", err, derr)
		}
		return bootstrap.Token{}, time.Time{}, err
	}
	return tok, expires, nil
}

// ListTokens lists the join tokens, oldest expiry first.
func (a *Admin) ListTokens(ctx context.Context) ([]TokenInfo, error) {
	client, err := a.client()
	if err != nil {
		return nil, err
	}
	list, err := client.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{FieldSelector: "type=" + string(tokenSecretType)})
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	now := time.Now()
	out := []TokenInfo{}
	for _, s := range list.Items {
		if string(s.Data["auth-extra-groups"]) != JoinGroup {
			continue // someone else's bootstrap token
		}
		t := TokenInfo{ID: string(s.Data["token-id"]), Description: string(s.Data["description"]), Reusable: s.Labels[reusableLabel] == "true"}
		if e, err := time.Parse(time.RFC3339, string(s.Data["expiration"])); err == nil {
			t.Expires, t.Expired = e, now.After(e)
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Expires.Before(out[j].Expires) })
	return out, nil
}

// DeleteToken deletes a token given by id or as the whole token.
func (a *Admin) DeleteToken(ctx context.Context, idOrToken string) (string, error) {
	id := idOrToken
	if tok, err := bootstrap.ParseToken(idOrToken); err == nil {
		id = tok.ID
	}
	if len(id) != 6 {
		return "", fmt.Errorf("%q is not a token id (6 characters, see `kubox token list`)", id)
	}
	client, err := a.client()
	if err != nil {
		return "", err
	}
	err = client.CoreV1().Secrets("kube-system").Delete(ctx, tokenPrefixName+id, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("no token with id %s (see `kubox token list`)", id)
	} else if err != nil {
		return "", err
	}
	return id, deleteJoinToken(ctx, client, id)
}

// etcd returns a client on a member that can answer membership questions:
// the local one, or, if it is a learner, one of the members it joined.
func (a *Admin) etcd(ctx context.Context) (*clientv3.Client, *clientv3.MemberListResponse, error) {
	tlsCfg, err := a.etcdTLS()
	if err != nil {
		return nil, nil, err
	}
	endpoints := []string{a.localEtcdURL()}
	if data, err := os.ReadFile(a.paths().JoinState); err == nil {
		var st joinState
		if json.Unmarshal(data, &st) == nil {
			endpoints = append(endpoints, st.Peers...)
		}
	}
	var errs []error
	for _, ep := range endpoints {
		cli, err := etcdClient([]string{ep}, tlsCfg)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, joinTimeout)
		list, err := cli.MemberList(lctx)
		cancel()
		if err == nil {
			return cli, list, nil
		}
		cli.Close()
		errs = append(errs, fmt.Errorf("%s: %w", ep, err))
	}
	return nil, nil, fmt.Errorf("no etcd member answered (does the cluster have quorum?): %w", errors.Join(errs...))
}

// etcdTLS is the box's etcd client configuration.
func (a *Admin) etcdTLS() (*tls.Config, error) {
	pki := a.pki()
	tlsCfg, err := (&transport.TLSInfo{
		CertFile: pki.EtcdClientCert, KeyFile: pki.EtcdClientKey, TrustedCAFile: pki.EtcdServerCACert,
	}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd client credentials: %w (run this on a box running kubox server, or set --data-dir)", err)
	}
	return tlsCfg, nil
}

// localEtcdURL is this box's etcd member.
func (a *Admin) localEtcdURL() string {
	return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(a.EtcdClientPort))
}

// Members lists etcd's members.
func (a *Admin) Members(ctx context.Context) ([]*etcdserverpb.Member, error) {
	cli, list, err := a.etcd(ctx)
	if err != nil {
		return nil, err
	}
	cli.Close()
	return list.Members, nil
}

// Promote makes learners voters: the one named, or every learner if name
// is empty. It returns the names promoted.
func (a *Admin) Promote(ctx context.Context, name string) ([]string, error) {
	cli, list, err := a.etcd(ctx)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	var done []string
	found := false
	for _, m := range list.Members {
		if name != "" && m.Name != name {
			continue
		}
		found = true
		if !m.IsLearner {
			if name != "" {
				return nil, fmt.Errorf("etcd member %s is already a voter", name)
			}
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, joinTimeout)
		_, err := cli.MemberPromote(pctx, m.ID)
		cancel()
		if errors.Is(err, rpctypes.ErrMemberLearnerNotReady) {
			return done, fmt.Errorf("learner %s has not caught up with the leader yet: try again in a minute", m.Name)
		} else if err != nil {
			return done, fmt.Errorf("promote %s: %w", m.Name, err)
		}
		done = append(done, m.Name)
	}
	if name != "" && !found {
		return nil, fmt.Errorf("no etcd member named %s (see `kubox etcd members`)", name)
	}
	return done, nil
}

// RemoveNode takes a box out of etcd and deletes its Node.
func (a *Admin) RemoveNode(ctx context.Context, name string) (string, error) {
	if name == a.NodeName && name != "" {
		return "", fmt.Errorf("%s is this box: run `kubox node remove %s` on another box of the cluster", name, name)
	}
	cli, list, err := a.etcd(ctx)
	if err != nil {
		return "", err
	}
	defer cli.Close()
	var member *etcdserverpb.Member
	voters := 0
	for _, m := range list.Members {
		if m.Name == name {
			member = m
		}
		if !m.IsLearner {
			voters++
		}
	}
	client, err := a.client()
	if err != nil {
		return "", err
	}
	_, nodeErr := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if member == nil && apierrors.IsNotFound(nodeErr) {
		return "", fmt.Errorf("no etcd member and no node named %s (see `kubox etcd members` and `kubectl get nodes`)", name)
	}
	var what string
	if member != nil {
		if !member.IsLearner && voters == 1 {
			return "", fmt.Errorf("%s is the only voting etcd member: removing it would destroy the cluster", name)
		}
		if err := removeMember(ctx, cli, member.ID); errors.Is(err, rpctypes.ErrUnhealthy) {
			return "", fmt.Errorf("remove etcd member %s: etcd refuses: without it, too few of the other members have been connected to the leader for %s (one is down or just restarted); check `kubox etcd members` and retry (nothing was changed)", name, removeSettle)
		} else if err != nil {
			return "", fmt.Errorf("remove etcd member %s: %w (nothing was changed)", name, err)
		}
		what = "etcd member"
	}
	if nodeErr == nil {
		if err := client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return what, fmt.Errorf("removed etcd member %s but could not delete its Node: %w (run `kubectl delete node %s`)", name, err, name)
		}
		if what != "" {
			what += " and "
		}
		what += "node"
	}
	return what, nil
}

// removeSettle is how long etcd's strict reconfiguration check wants a peer
// connected before it counts it as healthy (etcd's HealthInterval), plus
// margin; a member that restarted just before a removal is briefly not
// counted, so the removal is retried for this long.
const removeSettle = 15 * time.Second

// removeMember removes an etcd member, retrying while etcd answers that the
// cluster would be unhealthy without it: that answer is transient right
// after another member reconnects.
func removeMember(ctx context.Context, cli *clientv3.Client, id uint64) error {
	deadline := time.Now().Add(removeSettle)
	var err error
	// The last answer is the result, also when ctx ends first.
	_ = wait.PollUntilContextCancel(ctx, time.Second, true, func(context.Context) (bool, error) {
		rctx, cancel := context.WithTimeout(ctx, joinTimeout)
		_, err = cli.MemberRemove(rctx, id)
		cancel()
		return !errors.Is(err, rpctypes.ErrUnhealthy) || time.Now().After(deadline), nil
	})
	return err
}
