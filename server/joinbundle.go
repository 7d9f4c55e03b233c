package server

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kubox/kubox/bootstrap"
	"github.com/kubox/kubox/internal/fsutil"
)

// JoinSecret holds cluster.json (the settings every box must share, not
// secret) and, per live join token, the shared PKI sealed with a key derived
// from that token's secret (data key "token.<id>", see bootstrap.SealBundle).
// Join tokens may read JoinSecret only; a token opens only its own entry.
// The entry goes with its token: on `kubox token delete`, once the box that
// used a single-use token is up, and when a start of any box finds its token
// gone or expired.
const sealedKeyPrefix = "token."

func sealedKey(tokenID string) string { return sealedKeyPrefix + tokenID }

// patchJoinSecret applies a JSON merge patch to JoinSecret's data: a nil
// value removes that key. Other keys stay, so concurrent writers of
// different keys do not clobber one another.
func patchJoinSecret(ctx context.Context, client kubernetes.Interface, data map[string][]byte) error {
	patch, err := json.Marshal(map[string]any{"data": data})
	if err != nil {
		return err
	}
	_, err = client.CoreV1().Secrets("kube-system").Patch(ctx, JoinSecret, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// addTokenBundle stores the shared PKI of pkiDir sealed for tok.
func addTokenBundle(ctx context.Context, client kubernetes.Interface, pkiDir string, tok bootstrap.Token, reusable bool) error {
	files, err := bootstrap.ReadShared(pkiDir)
	if err != nil {
		return err
	}
	sealed, err := bootstrap.SealBundle(tok, bootstrap.JoinBundle{Files: files, Reusable: reusable})
	if err != nil {
		return err
	}
	// Right after a box's first start its join-bundle step may not have
	// made JoinSecret yet: wait a little for it.
	err = wait.PollUntilContextTimeout(ctx, time.Second, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		err := patchJoinSecret(ctx, client, map[string][]byte{sealedKey(tok.ID): sealed})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return true, err
	})
	if wait.Interrupted(err) {
		return fmt.Errorf("store the token's join bundle: kube-system/%s is not published yet: wait until kubox server is ready and try again", JoinSecret)
	} else if err != nil {
		return fmt.Errorf("store the token's join bundle: %w", err)
	}
	return nil
}

// deleteJoinToken deletes a join token and its sealed bundle; either being
// gone already is fine.
func deleteJoinToken(ctx context.Context, client kubernetes.Interface, id string) error {
	err := client.CoreV1().Secrets("kube-system").Delete(ctx, tokenPrefixName+id, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete join token %s: %w", id, err)
	}
	if err := patchJoinSecret(ctx, client, map[string][]byte{sealedKey(id): nil}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete the join bundle of token %s: %w", id, err)
	}
	return nil
}

// liveTokens returns the ids of the kubox join tokens that have not expired.
func liveTokens(ctx context.Context, client kubernetes.Interface) (map[string]bool, error) {
	list, err := client.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{FieldSelector: "type=" + string(tokenSecretType)})
	if err != nil {
		return nil, fmt.Errorf("list join tokens: %w", err)
	}
	live := map[string]bool{}
	now := time.Now()
	for _, s := range list.Items {
		e, err := time.Parse(time.RFC3339, string(s.Data["expiration"]))
		if err == nil && now.Before(e) {
			live[string(s.Data["token-id"])] = true
		}
	}
	return live, nil
}

// staleJoinKeys returns the keys of JoinSecret's data to remove: anything
// but cluster.json and the sealed bundles of live tokens. That includes the
// plaintext CA keys, sa.key and encryption config that kubox published
// there before join bundles were sealed.
func staleJoinKeys(data map[string][]byte, live map[string]bool) (stale, legacy []string) {
	for k := range data {
		if k == clusterKey {
			continue
		}
		if id, ok := strings.CutPrefix(k, sealedKeyPrefix); ok {
			if !live[id] {
				stale = append(stale, k)
			}
			continue
		}
		stale, legacy = append(stale, k), append(legacy, k)
	}
	return stale, legacy
}

// consumeJoinToken deletes the single-use token this box joined with, if
// join.json (at statePath) still names it, and then drops it from there;
// a box restarted before it got this far does it on its next start.
func consumeJoinToken(ctx context.Context, client kubernetes.Interface, statePath string) (string, error) {
	raw, err := os.ReadFile(statePath)
	if os.IsNotExist(err) {
		return "", nil
	} else if err != nil {
		return "", err
	}
	var st joinState
	if err := json.Unmarshal(raw, &st); err != nil {
		return "", fmt.Errorf("read %s: %w", statePath, err)
	}
	if st.Token == "" {
		return "", nil
	}
	if err := deleteJoinToken(ctx, client, st.Token); err != nil {
		return "", err
	}
	id := st.Token
	st.Token = ""
	out, err := json.Marshal(st)
	if err != nil {
		return "", err
	}
	if err := fsutil.WriteFileAtomic(statePath, out, 0o600); err != nil {
		return "", fmt.Errorf("record the used join token: %w", err)
	}
	return id, nil
}
