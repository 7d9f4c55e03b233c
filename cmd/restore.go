package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/kubox/kubox/backup"
	"github.com/kubox/kubox/backup/s3"
)

func newRestoreCommand() *cobra.Command {
	var snapshot string
	var insecure, skipSig, quiet, latest bool
	var opts *serverOpts
	cmd := &cobra.Command{
		Use:   "restore (--snapshot FILE|s3://BUCKET/KEY | --latest) --key-file KEY",
		Short: "Restore the cluster from a snapshot into this box's data dir (kubox server stopped)",
		Long: `Restore the cluster from a snapshot into this box's data dir.

kubox server must not be running on the data dir. The whole snapshot is
decrypted and checked first, and etcd is rebuilt in a staging dir beside the
data dir; only then is the current data dir renamed to <data-dir>.old-<unix
time> (never deleted) and the restored one put in its place. A wrong key or a
damaged file changes nothing on disk.

The next "kubox server" starts the restored cluster: every object, the same
CAs and keys (old kubeconfigs keep working), leaf certificates re-issued for
this box's node name and IPs, and the Node object of the snapshot's box
removed if this box has another name.

With an object store configured (snapshot-s3-* keys, in the config file or
as flags), --snapshot s3://BUCKET/KEY reads the snapshot from it directly:
it is streamed once to verify it (nothing is written), then again to
extract it. --latest takes the newest snapshot under the store's prefix,
whichever box made it, so a replacement box needs only the kubox binary,
the key and the store's credentials.

The snapshot must be signed by the signing key that the key file names (or
KEY.pub beside it): an unsigned snapshot, or one signed by another key, is
refused unless --insecure-skip-signature. Snapshots made before snapshots
were signed restore with a warning. Node name, node IP and ports come from
the flags or the config file, as for "kubox server".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (snapshot == "") == !latest {
				return errors.New("restore: give --snapshot FILE (or s3://BUCKET/KEY), or --latest")
			}
			s, err := loadNodeSettings(cmd, opts)
			if err != nil {
				return err
			}
			say := func(line string) {
				if !quiet {
					fmt.Fprintln(cmd.ErrOrStderr(), "restore: "+line)
				}
			}
			if latest {
				if snapshot, err = latestSnapshot(cmd.Context(), s); err != nil {
					return fmt.Errorf("restore --latest: %w", err)
				}
				say("latest snapshot: " + snapshot)
			}
			var source *backup.Source
			if s3.IsURL(snapshot) {
				if source, _, err = remoteSource(cmd.Context(), s, snapshot, say); err != nil {
					return fmt.Errorf("restore: %w", err)
				}
			}
			cfg, err := s.flags.config()
			if err != nil {
				return err
			}
			key, err := loadKey(s, insecure)
			if err != nil {
				return fmt.Errorf("restore: %w", err)
			}
			trust, err := loadTrust(s, skipSig)
			if err != nil {
				return fmt.Errorf("restore: %w", err)
			}
			release, err := lockDataDir(cfg.Paths().Lock)
			if err != nil {
				return fmt.Errorf("restore: %w", err)
			}
			defer release()
			out := cmd.OutOrStdout()
			peerURL := "https://" + net.JoinHostPort(cfg.NodeIP.String(), strconv.Itoa(cfg.EtcdPeerPort))
			res, err := backup.Restore(backup.RestoreOptions{
				Snapshot: snapshot, Source: source, Key: key, Trust: trust, DataDir: cfg.DataDir,
				NodeName: cfg.NodeName, PeerURL: peerURL,
				Progress: say,
				Warn:     func(line string) { fmt.Fprintln(cmd.ErrOrStderr(), "restore: "+line) },
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "restored %s (node %s, %s, etcd revision %d, %d keys) into %s in %s\n",
				snapshot, res.Header.NodeName, res.Header.CreatedAt.Format(time.RFC3339), res.Header.EtcdRevision,
				res.KeysTotal, cfg.DataDir, res.Duration.Round(time.Millisecond))
			if res.OldDataDir != "" {
				fmt.Fprintf(out, "the previous data dir is kept at %s\n", res.OldDataDir)
			}
			fmt.Fprintf(out, "now start kubox server: it runs as node %s (%s), re-issues leaf certificates for it", cfg.NodeName, cfg.NodeIP)
			if res.Header.NodeName != cfg.NodeName {
				fmt.Fprintf(out, " and removes the old node %s", res.Header.NodeName)
			}
			fmt.Fprintln(out)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&snapshot, "snapshot", "", "snapshot to restore: a file, or s3://BUCKET/KEY in the object store (snapshot-s3-*)")
	fl.BoolVar(&latest, "latest", false, "restore the newest snapshot: in the object store when one is configured (any box under the prefix), else in the snapshot dir")
	fl.BoolVar(&insecure, "insecure-plaintext", false, "restore a snapshot written with --insecure-plaintext (no key)")
	fl.BoolVar(&skipSig, "insecure-skip-signature", false, "restore a snapshot that is unsigned or signed by another key")
	fl.BoolVarP(&quiet, "quiet", "q", false, "print only the result")
	opts = addServerOpts(fl, append([]sharedFlag{
		keyFileFlag,
		{name: "data-dir", usage: "kubox data dir to restore into"},
		{name: "snapshot-dir", usage: "snapshot dir that --latest looks in without an object store (default <data-dir>/snapshots)"},
		{name: "node-name", usage: "this box's node name (default: the hostname, lower-cased)"},
		{name: "node-ip", usage: "this box's IPv4 address (default: the address of the default route's interface)"},
		{name: "etcd-peer-port", usage: "etcd peer port (on --node-ip)"},
	}, s3Flags...)...)
	return cmd
}

// lockDataDir takes the lock kubox server holds on <data-dir>/kubox.lock
// while it runs (see server.AcquireLock), so no server runs on the data dir
// during the restore and a running one makes the restore refuse. Unlike
// AcquireLock it writes nothing: a refused restore leaves the data dir
// exactly as it was. Without a lock file no server has run there.
func lockDataDir(path string) (func(), error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return func() {}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir is in use by a running kubox (pid %s, lock %s): stop it first", strings.TrimSpace(string(holder)), path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}
