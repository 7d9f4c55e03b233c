package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/grpclog"

	"github.com/kubox/kubox/backup"
	"github.com/kubox/kubox/backup/s3"
	"github.com/kubox/kubox/bootstrap"
	"github.com/kubox/kubox/internal/diskspace"
	"github.com/kubox/kubox/server"
)

// nodeSettings are what the snapshot and restore verbs need from the node's
// configuration: the same flags and config file as `kubox server`.
type nodeSettings struct {
	flags   *serverFlags
	paths   server.Paths
	snapDir string
	keyFile string
}

// loadNodeSettings reads the config file the way `kubox server` does, with
// the command's own flags (given on the command line) winning.
func loadNodeSettings(cmd *cobra.Command, opts *serverOpts) (*nodeSettings, error) {
	f, err := opts.load(cmd)
	if err != nil {
		return nil, err
	}
	s := &nodeSettings{flags: f, paths: f.paths(), snapDir: f.cfg.SnapshotDir, keyFile: f.cfg.SnapshotKeyFile}
	if s.snapDir == "" {
		s.snapDir = backup.DefaultDir(f.cfg.DataDir)
	}
	if s.keyFile == "" {
		s.keyFile = backup.DefaultKeyFile
	}
	return s, nil
}

// keyFileFlag is the backup key file as the snapshot and restore verbs
// name it.
var keyFileFlag = sharedFlag{name: "key-file", server: "snapshot-key-file", usage: "backup key file"}

func (s *nodeSettings) etcdEndpoint() backup.EtcdEndpoint {
	pki := bootstrap.Layout(s.paths.PKI, s.paths.Kubeconfigs)
	return backup.EtcdEndpoint{
		URL:    "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.flags.cfg.EtcdClientPort)),
		CACert: pki.EtcdServerCACert,
		Cert:   pki.EtcdClientCert,
		Key:    pki.EtcdClientKey,
	}
}

func newSnapshotCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Save, list, verify and remove encrypted snapshots of the cluster (etcd and PKI)",
		Long: `Save, list, verify and remove encrypted snapshots of the cluster.

A snapshot is one file holding the etcd database and the cluster's PKI (CAs,
keys, service-account keys, the secrets-at-rest encryption config),
compressed and encrypted to the backup key. "kubox restore" brings a cluster
back from it on any box. The data dir, snapshot dir, key file and etcd port
come from the flags, else from the config file ` + server.DefaultConfigFile + `
(the keys of "kubox server": data-dir, snapshot-dir, snapshot-key-file, ...).`,
	}
	// gRPC's own logging (routed to klog by the embedded components) would
	// print connection chatter around the one etcd call a verb makes.
	cmd.PersistentPreRun = func(*cobra.Command, []string) {
		grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, io.Discard))
	}
	opts := addServerOpts(cmd.PersistentFlags(), append([]sharedFlag{
		{name: "data-dir", usage: "kubox data dir"},
		{name: "snapshot-dir", usage: "snapshot dir (default <data-dir>/snapshots)"},
		keyFileFlag,
		{name: "etcd-client-port", usage: "the node's etcd client port (on 127.0.0.1)"},
		{name: "node-name", usage: "node name recorded in the snapshot (default: the node's etcd member name)"},
	}, s3Flags...)...)
	settings := func(cmd *cobra.Command) (*nodeSettings, error) { return loadNodeSettings(cmd, opts) }

	cmd.AddCommand(newSnapshotKeyCommand(settings), newSnapshotSaveCommand(settings), newSnapshotLsCommand(settings),
		newSnapshotVerifyCommand(settings), newSnapshotRmCommand(settings), newSnapshotPruneCommand(settings))
	return cmd
}

type settingsFunc func(*cobra.Command) (*nodeSettings, error)

func newSnapshotKeyCommand(settings settingsFunc) *cobra.Command {
	key := &cobra.Command{Use: "key", Short: "Manage the backup key"}
	key.AddCommand(&cobra.Command{
		Use:   "create",
		Short: "Create the backup key: identity, signing key and public keys; refuses to replace existing ones",
		Long: `Create the backup key: three files beside each other (KEY is --key-file).

  KEY       age identity (0600): decrypts snapshots. Needed only to verify and
            restore: keep it off the boxes. It names the trusted signing key.
  KEY.sign  ed25519 signing key (0600): every box signs its snapshots with it.
  KEY.pub   the public halves (recipient and signing public key): boxes
            encrypt snapshots to it.

Boxes need KEY.pub and KEY.sign; KEY can be removed from them. If KEY exists
already (made before snapshots were signed), it is kept and only KEY.sign
and KEY.pub are added.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := settings(cmd)
			if err != nil {
				return err
			}
			kf, err := backup.CreateKeyFiles(s.keyFile)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "wrote %s (recipient %s, signing key %s)\n", strings.Join(kf.Created, ", "), kf.Public.Recipient, kf.Public.Signer)
			fmt.Fprintf(w, "boxes need %s and %s; keep %s off this box (and not beside the snapshots): no snapshot can be verified or restored without it\n",
				backup.PublicKeyFile(s.keyFile), backup.SigningKeyFile(s.keyFile), s.keyFile)
			return nil
		},
	})
	return key
}

// loadKey loads the key, or nil with --insecure-plaintext.
func loadKey(s *nodeSettings, insecure bool) (*backup.Key, error) {
	if insecure {
		return nil, nil
	}
	return backup.LoadKeyFile(s.keyFile)
}

// loadTrust says whose signature verify and restore accept: the signing
// public key the key file names (or its .pub file), or anything with
// --insecure-skip-signature.
func loadTrust(s *nodeSettings, skip bool) (backup.Trust, error) {
	if skip {
		return backup.Trust{InsecureSkipSignature: true}, nil
	}
	signer, err := backup.TrustedSigner(s.keyFile)
	if err != nil {
		return backup.Trust{}, err
	}
	return backup.Trust{Signer: signer}, nil
}

// loadWriterKeys loads the recipient and signing key a save needs; with
// --insecure-plaintext only the signing key, if there is one.
func loadWriterKeys(s *nodeSettings, insecure bool) (string, *backup.SigningKey, error) {
	if insecure {
		signer, err := backup.LoadSigningKey(s.keyFile)
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil, nil
		}
		return "", signer, err
	}
	pub, signer, err := backup.LoadWriterKeys(s.keyFile)
	if err != nil {
		return "", nil, err
	}
	return pub.Recipient, signer, nil
}

// snapshotJSON is one snapshot in -o json output.
type snapshotJSON struct {
	File         string    `json:"file"`
	Path         string    `json:"path"`
	Name         string    `json:"name,omitempty"`
	Node         string    `json:"node,omitempty"`
	CreatedAt    time.Time `json:"created_at,omitzero"`
	Size         int64     `json:"size"`
	EtcdRevision int64     `json:"etcd_revision,omitempty"`
	EtcdDBSize   int64     `json:"etcd_db_size,omitempty"`
	KuboxVersion string    `json:"kubox_version,omitempty"`
	ClusterID    string    `json:"cluster_id,omitempty"`
	Scheduled    bool      `json:"scheduled"`
	Encryption   string    `json:"encryption,omitempty"`
	Signer       string    `json:"signer,omitempty"`
	Error        string    `json:"error,omitempty"`
	// Location is "local" (Path is a file) or "s3" (Path is an s3:// URL).
	Location string `json:"location"`
}

func toJSON(e backup.Entry) snapshotJSON {
	j := snapshotJSON{
		File: filepath.Base(e.Path), Path: e.Path, Size: e.Size,
		Name: e.Header.Name, Node: e.Header.NodeName, CreatedAt: e.Header.CreatedAt,
		EtcdRevision: e.Header.EtcdRevision, EtcdDBSize: e.Header.EtcdDBSize, KuboxVersion: e.Header.KuboxVersion,
		ClusterID: e.Header.ClusterID, Scheduled: e.Header.Scheduled, Encryption: e.Header.Encryption,
		Signer: e.Header.Signer, Location: "local",
	}
	if e.Err != nil {
		j.Error = e.Err.Error()
	}
	return j
}

func newSnapshotSaveCommand(settings settingsFunc) *cobra.Command {
	var name string
	var insecure, quiet bool
	var out *output
	cmd := &cobra.Command{
		Use:   "save",
		Short: "Take an encrypted snapshot of the running node's etcd and PKI now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := settings(cmd)
			if err != nil {
				return err
			}
			recipient, signer, err := loadWriterKeys(s, insecure)
			if err != nil {
				return fmt.Errorf("%w (or give --insecure-plaintext to write an unencrypted snapshot)", err)
			}
			// Unless told, Save records the name of the etcd member, which
			// kubox server names after its node (whatever flags it ran with).
			node := strings.ToLower(s.flags.cfg.NodeName)
			// On the data dir's disk the snapshot must leave the floor below
			// which kubox server stops.
			keepFree, err := diskspace.Reserve(s.flags.cfg.DataDir, s.snapDir)
			if err != nil {
				return fmt.Errorf("save snapshot: %w", err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			errw := cmd.ErrOrStderr()
			if insecure && !quiet {
				fmt.Fprintln(errw, "snapshot: WARNING: --insecure-plaintext: this snapshot holds the cluster's CA keys and Secrets UNENCRYPTED")
			}
			say := func(line string) {
				if !quiet && !out.JSON() {
					fmt.Fprintln(errw, "snapshot: "+line)
				}
			}
			res, err := saveSnapshot(ctx, s, backup.SaveOptions{
				Etcd: s.etcdEndpoint(), PKIDir: s.paths.PKI, Dir: s.snapDir,
				Recipient: recipient, Signer: signer, InsecurePlaintext: insecure, Name: name, NodeName: node, KuboxVersion: version,
				KeepFree: keepFree,
				Progress: func(p backup.Progress) { say(p.Message) },
			}, say)
			if err != nil {
				return err
			}
			j := struct {
				snapshotJSON
				DurationSeconds float64 `json:"duration_seconds"`
				DBBytesPerSec   float64 `json:"db_bytes_per_second"`
				EtcdVersion     string  `json:"etcd_version,omitempty"`
			}{toJSON(res.Entry), res.Duration.Seconds(), res.DBRate(), res.EtcdVersion}
			return out.Print(cmd.OutOrStdout(), j, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "%s\n  size %s (etcd db %s at revision %d, %d PKI files), %s, took %s (%s/s)\n",
					res.Path, backup.HumanBytes(res.Size), backup.HumanBytes(res.Header.EtcdDBSize), res.Header.EtcdRevision,
					res.Header.PKIFiles, res.Header.CreatedAt.Format(time.RFC3339), res.Duration.Round(time.Millisecond),
					backup.HumanBytes(int64(res.DBRate())))
				return err
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", `label for the snapshot, e.g. before-upgrade (default "manual")`)
	cmd.Flags().BoolVar(&insecure, "insecure-plaintext", false, "write the snapshot UNENCRYPTED (it holds the CA keys and Secrets)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the result")
	out = addOutputFlag(cmd, "output format: json")
	return cmd
}

func newSnapshotLsCommand(settings settingsFunc) *cobra.Command {
	var out *output
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the snapshots in the snapshot dir, newest first (no key needed)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := settings(cmd)
			if err != nil {
				return err
			}
			entries, err := backup.List(s.snapDir)
			if err != nil {
				return err
			}
			list := make([]snapshotJSON, 0, len(entries))
			for _, e := range entries {
				list = append(list, toJSON(e))
			}
			remote, err := listRemote(cmd.Context(), s)
			if err != nil {
				return err
			}
			for _, e := range remote {
				j := toJSON(e)
				j.Location = "s3"
				list = append(list, j)
			}
			return out.Print(cmd.OutOrStdout(), list, func(w io.Writer) error { return printSnapshots(w, append(entries, remote...)) })
		},
	}
	out = addOutputFlag(cmd, "output format: json")
	return cmd
}

func printSnapshots(w io.Writer, entries []backup.Entry) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE\tTIME\tNODE\tSIZE\tREVISION\tKIND\tKUBOX")
	for _, e := range entries {
		file := filepath.Base(e.Path)
		if s3.IsURL(e.Path) {
			// Where it lives, in the form restore and verify take.
			file = e.Path
		}
		if e.Err != nil {
			fmt.Fprintf(tw, "%s\t-\t-\t%s\t-\tunreadable: %v\t-\n", file, backup.HumanBytes(e.Size), e.Err)
			continue
		}
		kind := "manual"
		if e.Header.Scheduled {
			kind = "scheduled"
		}
		if e.Header.Encryption == backup.EncryptionNone {
			kind += ",UNENCRYPTED"
		}
		if e.Header.Signer == "" {
			kind += ",unsigned"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", file, e.Header.CreatedAt.Format(time.RFC3339),
			e.Header.NodeName, backup.HumanBytes(e.Size), e.Header.EtcdRevision, kind, e.Header.KuboxVersion)
	}
	return tw.Flush()
}

func newSnapshotVerifyCommand(settings settingsFunc) *cobra.Command {
	var insecure, skipSig bool
	var out *output
	cmd := &cobra.Command{
		Use:   "verify FILE|s3://BUCKET/KEY",
		Short: "Decrypt and check a whole snapshot and its signature with the key; changes nothing",
		Long: `Decrypt and check a whole snapshot with the backup key (--key-file), changing
nothing. The snapshot must be signed by the signing key that the key file
names (or, for a key made before snapshots were signed, that KEY.pub beside
it names); an unsigned snapshot or one signed by another key is refused
unless --insecure-skip-signature. Snapshots made before snapshots were signed
are accepted with a warning.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := settings(cmd)
			if err != nil {
				return err
			}
			key, err := loadKey(s, insecure)
			if err != nil {
				return err
			}
			trust, err := loadTrust(s, skipSig)
			if err != nil {
				return err
			}
			begin := time.Now()
			h, size, err := verifySnapshot(cmd.Context(), s, args[0], key, trust)
			if err != nil {
				return err
			}
			if w := backup.SignatureWarning(h, trust); w != "" {
				fmt.Fprintln(cmd.ErrOrStderr(), "verify: "+w)
			}
			took := time.Since(begin)
			j := toJSON(backup.Entry{Path: args[0], Header: h, Size: size})
			return out.Print(cmd.OutOrStdout(), j, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "%s: ok (%q of node %s, %s, etcd revision %d, db %s, %d PKI files; checked in %s)\n",
					args[0], h.Name, h.NodeName, h.CreatedAt.Format(time.RFC3339), h.EtcdRevision, backup.HumanBytes(h.EtcdDBSize),
					h.PKIFiles, took.Round(time.Millisecond))
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&insecure, "insecure-plaintext", false, "check a snapshot written with --insecure-plaintext (no key)")
	cmd.Flags().BoolVar(&skipSig, "insecure-skip-signature", false, "accept a snapshot that is unsigned or signed by another key")
	out = addOutputFlag(cmd, "output format: json")
	return cmd
}

func newSnapshotRmCommand(settings settingsFunc) *cobra.Command {
	return &cobra.Command{
		Use:   "rm FILE...",
		Short: "Remove snapshots from the snapshot dir (names as 'kubox snapshot ls' shows them)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := settings(cmd)
			if err != nil {
				return err
			}
			var errs []error
			for _, name := range args {
				p, err := removeSnapshot(cmd.Context(), s, name)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", p)
			}
			return errors.Join(errs...)
		},
	}
}

func newSnapshotPruneCommand(settings settingsFunc) *cobra.Command {
	var keep int
	var scheduledOnly bool
	cmd := &cobra.Command{
		Use:   "prune --keep N",
		Short: "Remove all but the newest N snapshots",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("keep") {
				return errors.New("prune: give --keep N")
			}
			s, err := settings(cmd)
			if err != nil {
				return err
			}
			removed, err := backup.Prune(s.snapDir, keep, scheduledOnly)
			for _, p := range removed {
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", p)
			}
			if err == nil && len(removed) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "nothing to remove")
			}
			return err
		},
	}
	cmd.Flags().IntVar(&keep, "keep", 0, "how many snapshots to keep (at least 1)")
	cmd.Flags().BoolVar(&scheduledOnly, "scheduled-only", false, "count and remove scheduled snapshots only, as the schedule's retention does")
	return cmd
}
