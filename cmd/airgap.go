package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/grpclog"

	"github.com/kubox/kubox/airgap"
)

// airgapSettings are the node's air-gap settings, from the flags of the
// airgap verb, else the config file `kubox server` reads.
type airgapSettings struct {
	dataDir, socket string
	policy          airgap.SignaturePolicy
}

func loadAirgapSettings(cmd *cobra.Command, opts *serverOpts) (*airgapSettings, error) {
	f, err := opts.load(cmd)
	if err != nil {
		return nil, err
	}
	s := &airgapSettings{dataDir: f.cfg.DataDir, socket: f.paths().ContainerdSock}
	s.policy.Require, s.policy.AllowUnsigned = f.cfg.AirgapRequireSignature, f.cfg.AirgapAllowUnsigned
	if f.cfg.AirgapPublicKeyFile != "" {
		if s.policy.PublicKey, err = airgap.LoadPublicKey(f.cfg.AirgapPublicKeyFile); err != nil {
			return nil, err
		}
	}
	if s.policy.Require && s.policy.PublicKey == nil {
		return nil, errors.New("airgap-require-signature is set but no airgap-public-key-file is given: set the trusted public key")
	}
	return s, nil
}

func (s *airgapSettings) connect() (*containerd.Client, error) {
	if _, err := os.Stat(s.socket); err != nil {
		return nil, fmt.Errorf("kubox's containerd socket %s is not there: is kubox server running (or set --run-dir)?", s.socket)
	}
	c, err := containerd.New(s.socket, containerd.WithTimeout(5*time.Second), containerd.WithDefaultNamespace(airgap.Namespace))
	if err != nil {
		return nil, fmt.Errorf("cannot reach kubox's containerd at %s: %w", s.socket, err)
	}
	return c, nil
}

func newAirgapCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "airgap",
		Short: "Build, inspect and import image bundles for boxes without network",
		Long: `Build, inspect and import image bundles for boxes without network.

A bundle is one file: a zstd-compressed OCI image layout with a manifest of
every image and blob digest, optionally signed (ed25519). "kubox server"
imports the bundles in its images dir (default <data-dir>/images) at start
and whenever one is copied there; images are pinned so the kubelet's image
garbage collection never removes them.`,
	}
	cmd.PersistentPreRun = func(*cobra.Command, []string) {
		grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, io.Discard))
	}
	opts := addServerOpts(cmd.PersistentFlags(),
		sharedFlag{name: "data-dir", usage: "kubox data dir"},
		sharedFlag{name: "run-dir", usage: "kubox run dir (containerd's socket)"},
		sharedFlag{name: "airgap-public-key-file", usage: "trusted public key to check bundle signatures with"},
		sharedFlag{name: "airgap-require-signature", usage: "refuse bundles not signed by the trusted key"},
		sharedFlag{name: "airgap-allow-unsigned", usage: "import unsigned bundles although a trusted key is set"},
	)
	settings := func(cmd *cobra.Command) (*airgapSettings, error) { return loadAirgapSettings(cmd, opts) }

	bundle := &cobra.Command{Use: "bundle", Short: "Create and list bundles"}
	bundle.AddCommand(newBundleCreateCommand(), newBundleLsCommand(settings))
	key := &cobra.Command{Use: "key", Short: "Manage bundle signing keys"}
	key.AddCommand(newAirgapKeyCreateCommand())
	cmd.AddCommand(bundle, key, newAirgapImportCommand(settings), newAirgapLsCommand(settings))
	return cmd
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func mb(n int64) string { return airgap.MB(n) }

// rate describes the bytes an image step moved: an image whose layers all
// came with an earlier one moved almost nothing.
func rate(p airgap.ImageProgress) string {
	if p.New < p.Size/2 {
		return fmt.Sprintf("%s new (layers shared with an earlier image), %s", mb(p.New), p.Took.Round(time.Millisecond))
	}
	return fmt.Sprintf("%s new, %.1f MB/s", mb(p.New), p.MBps())
}

func newBundleCreateCommand() *cobra.Command {
	var out, signKey, platform, manifestsDir, app string
	var archives []string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "create -o FILE [IMAGE...] [--from-archive A.tar ...] [--manifests DIR --name APP]",
		Short: "Bundle images from registries and/or local OCI or docker archives, and an application's manifests, into one file",
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("say where the bundle goes with -o FILE")
			}
			if len(args) == 0 && len(archives) == 0 {
				return errors.New("name images to bundle (IMAGE... or --from-archive FILE)")
			}
			opts := airgap.WriteOptions{}
			if manifestsDir != "" || app != "" {
				if manifestsDir == "" || app == "" {
					return errors.New("--manifests DIR and --name APP go together: the application's files and the name a later bundle replaces them by")
				}
				if err := airgap.CheckAppName(app); err != nil {
					return fmt.Errorf("--name: %w", err)
				}
				files, err := airgap.ReadAppDir(manifestsDir)
				if err != nil {
					return err
				}
				opts.App, opts.Manifests = app, files
			}
			plat, err := v1.ParsePlatform(platform)
			if err != nil || plat.OS == "" || plat.Architecture == "" {
				return fmt.Errorf("--platform %q: want os/arch[/variant], e.g. linux/amd64", platform)
			}
			if signKey != "" {
				if opts.SignKey, err = airgap.LoadPrivateKey(signKey); err != nil {
					return err
				}
			}
			ctx, stop := signalContext()
			defer stop()
			work, err := os.MkdirTemp(filepath.Dir(out), ".kubox-bundle-work-")
			if err != nil {
				return fmt.Errorf("scratch dir beside %s: %w", out, err)
			}
			defer os.RemoveAll(work)
			var srcs []airgap.Source
			for _, a := range archives {
				s, err := airgap.FromArchive(a, *plat, work)
				if err != nil {
					return err
				}
				srcs = append(srcs, s...)
			}
			for _, ref := range args {
				s, err := airgap.FromRegistry(ctx, ref, *plat)
				if err != nil {
					return err
				}
				srcs = append(srcs, s)
			}
			w := cmd.OutOrStdout()
			if !quiet {
				opts.Progress = func(p airgap.ImageProgress) {
					fmt.Fprintf(w, "added %s  %s  %s\n", p.Name, mb(p.Size), rate(p))
				}
			}
			begin := time.Now()
			m, err := airgap.CreateFile(ctx, out, srcs, opts)
			if err != nil {
				return err
			}
			if !quiet {
				fi, _ := os.Stat(out)
				signed := "unsigned"
				if opts.SignKey != nil {
					signed = "signed"
				}
				for _, f := range m.Manifests {
					fmt.Fprintf(w, "added manifest %s/%s  %d bytes\n", m.App, f.Name, f.Size)
				}
				fmt.Fprintf(w, "wrote %s: %d images, %d blobs, %s (%s on disk), %d manifests, %s, in %s\n", out, len(m.Images), len(m.Blobs),
					mb(m.Size()), mb(fi.Size()), len(m.Manifests), signed, time.Since(begin).Round(time.Millisecond))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "bundle file to write")
	cmd.Flags().StringArrayVar(&archives, "from-archive", nil, "local OCI layout tar or docker save tarball (repeatable)")
	cmd.Flags().StringVar(&signKey, "sign-key", "", "ed25519 private key to sign the bundle with (\"kubox airgap key create\")")
	cmd.Flags().StringVar(&platform, "platform", "linux/amd64", "platform of the images to pull")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print nothing on success")
	cmd.Flags().StringVar(&manifestsDir, "manifests", "", "dir whose .yaml/.yml/.json files the bundle carries and the nodes apply after importing the images")
	cmd.Flags().StringVar(&app, "name", "", "the application's name (with --manifests): a later bundle of the same name replaces its manifests")
	return cmd
}

type bundleManifestJSON struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

type bundleImageJSON struct {
	Name     string `json:"name"`
	Digest   string `json:"digest"`
	Platform string `json:"platform,omitempty"`
	Size     int64  `json:"size"`
}

type bundleJSON struct {
	File     string            `json:"file"`
	ID       string            `json:"id"`
	Created  time.Time         `json:"created"`
	Signed   bool              `json:"signed"`
	KeyID    string            `json:"keyID,omitempty"`
	Verified bool              `json:"verified"`
	Size     int64             `json:"size"`
	Blobs    int               `json:"blobs"`
	Images   []bundleImageJSON `json:"images"`
	// App and Manifests: the application the bundle carries, if any.
	App       string               `json:"app,omitempty"`
	Manifests []bundleManifestJSON `json:"manifests,omitempty"`
}

func newBundleLsCommand(settings func(*cobra.Command) (*airgapSettings, error)) *cobra.Command {
	var out *output
	var check bool
	cmd := &cobra.Command{
		Use:   "ls FILE",
		Short: "List a bundle's images, digests and sizes (--verify: check every blob and the signature)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			r, err := airgap.NewReader(f)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			defer r.Close()
			m := r.Manifest()
			signed, keyID := r.Signed()
			j := bundleJSON{File: args[0], ID: r.ID().String(), Created: m.Created, Signed: signed, KeyID: keyID, Size: m.Size(), Blobs: len(m.Blobs)}
			if check {
				s, err := settings(cmd)
				if err != nil {
					return err
				}
				if j.Verified, err = s.policy.Check(r); err != nil {
					return fmt.Errorf("%s: %w", args[0], err)
				}
				if err := r.Verify(); err != nil {
					return fmt.Errorf("%s: %w", args[0], err)
				}
			}
			for _, im := range m.Images {
				j.Images = append(j.Images, bundleImageJSON{Name: im.Name, Digest: im.Digest.String(), Platform: im.Platform, Size: im.Size})
			}
			j.App = m.App
			for _, f := range m.Manifests {
				j.Manifests = append(j.Manifests, bundleManifestJSON{Name: f.Name, Digest: f.Digest.String(), Size: f.Size})
			}
			return out.Print(cmd.OutOrStdout(), j, func(w io.Writer) error {
				sig := "unsigned"
				if signed {
					sig = "signed by key " + keyID
					if j.Verified {
						sig += " (verified)"
					}
				}
				fmt.Fprintf(w, "bundle %s  %s  %d blobs, %s, created %s\n", j.ID, sig, j.Blobs, mb(j.Size), m.Created.Format(time.RFC3339))
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "IMAGE\tDIGEST\tPLATFORM\tSIZE")
				for _, im := range j.Images {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", im.Name, im.Digest, im.Platform, mb(im.Size))
				}
				if len(j.Manifests) > 0 {
					fmt.Fprintln(tw, "\nMANIFEST\tDIGEST\t\tSIZE")
					for _, f := range j.Manifests {
						fmt.Fprintf(tw, "%s/%s\t%s\t\t%d bytes\n", j.App, f.Name, f.Digest, f.Size)
					}
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if check {
					fmt.Fprintln(w, "every blob checked: OK")
				}
				return nil
			})
		},
	}
	out = addOutputFlag(cmd, "output format: json")
	cmd.Flags().BoolVar(&check, "verify", false, "read the whole bundle and check every digest (and the signature, with a trusted key)")
	return cmd
}

func newAirgapKeyCreateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "create NAME",
		Short: "Create an ed25519 signing key pair: NAME.key (private, 0600) and NAME.pub (give it to the nodes)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pub, err := airgap.GenerateKeyFiles(args[0]+".key", args[0]+".pub")
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s.key (keep it private) and %s.pub (key ID %s): set airgap-public-key-file to the .pub on each node\n",
				args[0], args[0], airgap.KeyID(pub))
			return nil
		},
	}
}

func newAirgapImportCommand(settings func(*cobra.Command) (*airgapSettings, error)) *cobra.Command {
	var o importFlags
	cmd := &cobra.Command{
		Use:   "import FILE...",
		Short: "Import bundles into this node's containerd now (pinned); already imported ones are skipped",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := settings(cmd)
			if err != nil {
				return err
			}
			client, err := s.connect()
			if err != nil {
				return err
			}
			defer client.Close()
			ctx, stop := signalContext()
			defer stop()
			rec := airgap.Record{Path: airgap.DefaultRecordPath(s.dataDir)}
			w := cmd.OutOrStdout()
			for _, file := range args {
				if err := importOne(ctx, client, rec, s.dataDir, s.policy, file, o, w); err != nil {
					return fmt.Errorf("%s: %w (nothing from it was imported)", file, err)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&o.quiet, "quiet", "q", false, "print nothing on success")
	cmd.Flags().BoolVar(&o.force, "force", false, "import even if this bundle was imported before")
	cmd.Flags().BoolVar(&o.allowDowngrade, "allow-downgrade", false, "import a bundle older than the one an image's tag came from, moving the tag back")
	return cmd
}

type importFlags struct{ quiet, force, allowDowngrade bool }

func importOne(ctx context.Context, client *containerd.Client, rec airgap.Record, dataDir string, policy airgap.SignaturePolicy, file string, o importFlags, w io.Writer) error {
	quiet := o.quiet
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	known, err := rec.Load()
	if err != nil {
		fmt.Fprintln(os.Stderr, "warning: "+err.Error())
	}
	opts := airgap.ImportOptions{Signature: policy, AllowDowngrade: o.allowDowngrade, AppsDir: airgap.AppsDir(dataDir)}
	if !o.force {
		opts.Skip = func(id digest.Digest, m *airgap.Manifest) bool {
			return airgap.AlreadyImported(ctx, client, known, id, m)
		}
	}
	if !quiet {
		opts.Progress = func(p airgap.ImageProgress) {
			fmt.Fprintf(w, "imported %s  %s  %s  (pinned)\n", p.Name, mb(p.Size), rate(p))
		}
		opts.Begin = func(_ *airgap.Manifest, t airgap.Transfer) {
			if t.Skipped() > 0 {
				fmt.Fprintf(w, "%s of %s already in containerd (an earlier or interrupted import): not written again\n", mb(t.Skipped()), mb(t.Total))
			}
		}
		opts.Report = func(t airgap.Transfer) {
			switch {
			case t.Unpacking == "":
				fmt.Fprintf(w, "%3.0f%%  %s of %s  %.1f MB/s  %s written\n", t.Percent(), mb(t.Read), mb(t.Total), t.MBps(), mb(t.Written))
			case t.Elapsed >= 10*time.Second:
				fmt.Fprintf(w, "unpacking %s\n", t.Unpacking)
			}
		}
	}
	res, err := airgap.Import(ctx, client, f, opts)
	if err != nil {
		return err
	}
	abs, _ := filepath.Abs(file)
	if res.Skipped {
		if !quiet {
			fmt.Fprintf(w, "%s: already imported (bundle %s); --force imports it again\n", file, res.ID)
		}
		return nil
	}
	if err := rec.Add(airgap.NewRecordEntry(abs, res)); err != nil {
		return err
	}
	for _, d := range res.Downgrades {
		// Said even with -q: a tag moved back is never silent.
		fmt.Fprintf(w, "moved %s (--allow-downgrade)\n", d)
	}
	if !quiet {
		sig := "unsigned"
		switch {
		case res.Verified:
			sig = "signature verified"
		case res.Signed:
			sig = "signed, signature not checked (no trusted key)"
		}
		fmt.Fprintf(w, "imported bundle %s (%s): %d images, %s in %s, %.1f MB/s, %s\n", file, res.ID, len(res.Manifest.Images),
			mb(res.Bytes), res.Took.Round(time.Millisecond), res.MBps(), sig)
	}
	if a := res.App; a.App != "" && !quiet {
		fmt.Fprintf(w, "installed application %s in %s (%d files written, %d unchanged, %d removed): kubox server applies it (kubox manifests ls)\n",
			a.App, filepath.Join(airgap.AppsDir(dataDir), a.App), a.Written, a.Same, a.Removed)
	}
	return nil
}

type imageJSON struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	Pinned bool   `json:"pinned"`
	Bundle string `json:"bundle,omitempty"`
}

func newAirgapLsCommand(settings func(*cobra.Command) (*airgapSettings, error)) *cobra.Command {
	var out *output
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the images this node has, pinned or not, and the bundle each came from",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := settings(cmd)
			if err != nil {
				return err
			}
			client, err := s.connect()
			if err != nil {
				return err
			}
			defer client.Close()
			ctx := namespaces.WithNamespace(cmd.Context(), airgap.Namespace)
			list, err := client.ImageService().List(ctx)
			if err != nil {
				return fmt.Errorf("list images: %w", err)
			}
			images := []imageJSON{}
			for _, i := range list {
				size, _ := containerd.NewImage(client, i).Size(ctx)
				images = append(images, imageJSON{Name: i.Name, Digest: i.Target.Digest.String(), Size: size,
					Pinned: i.Labels[airgap.PinnedLabel] == airgap.PinnedValue, Bundle: i.Labels[airgap.BundleLabel]})
			}
			return out.Print(cmd.OutOrStdout(), images, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "IMAGE\tDIGEST\tSIZE\tPINNED\tBUNDLE")
				for _, i := range images {
					b := i.Bundle
					if len(b) > 19 {
						b = b[:19]
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\n", i.Name, shortDigest(i.Digest), mb(i.Size), i.Pinned, b)
				}
				return tw.Flush()
			})
		},
	}
	out = addOutputFlag(cmd, "output format: json")
	return cmd
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
