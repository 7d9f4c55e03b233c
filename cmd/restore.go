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
)

func newRestoreCommand() *cobra.Command {
	var snapshot string
	var insecure, quiet bool
	var opts *serverOpts
	cmd := &cobra.Command{
		Use:   "restore --snapshot FILE --key-file KEY",
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
removed if this box has another name. Node name, node IP and ports come from
the flags or the config file, as for "kubox server".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if snapshot == "" {
				return errors.New("restore: give --snapshot FILE")
			}
			s, err := loadNodeSettings(cmd, opts)
			if err != nil {
				return err
			}
			cfg, err := s.flags.config()
			if err != nil {
				return err
			}
			key, err := loadKey(s, insecure)
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
				Snapshot: snapshot, Key: key, DataDir: cfg.DataDir,
				NodeName: cfg.NodeName, PeerURL: peerURL,
				Progress: func(line string) {
					if !quiet {
						fmt.Fprintln(cmd.ErrOrStderr(), "restore: "+line)
					}
				},
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
	fl.StringVar(&snapshot, "snapshot", "", "snapshot file to restore")
	fl.BoolVar(&insecure, "insecure-plaintext", false, "restore a snapshot written with --insecure-plaintext (no key)")
	fl.BoolVarP(&quiet, "quiet", "q", false, "print only the result")
	opts = addServerOpts(fl,
		keyFileFlag,
		sharedFlag{name: "data-dir", usage: "kubox data dir to restore into"},
		sharedFlag{name: "node-name", usage: "this box's node name (default: the hostname, lower-cased)"},
		sharedFlag{name: "node-ip", usage: "this box's IPv4 address (default: the address of the default route's interface)"},
		sharedFlag{name: "etcd-peer-port", usage: "etcd peer port (on --node-ip)"},
	)
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
