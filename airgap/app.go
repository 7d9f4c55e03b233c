package airgap

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/kubox/kubox/internal/fsutil"
	"github.com/kubox/kubox/services/manifests"
)

// AppSource is one manifest file of an application: its file name and content.
type AppSource struct {
	Name string
	Data []byte
}

// ReadAppDir reads the manifests of dir for a bundle: the .yaml, .yml and
// .json files directly in it (not in subdirectories, and not hidden ones:
// the files the manifests dir would apply), each of which must parse and
// hold at least one object. What it refuses, it refuses with one line.
func ReadAppDir(dir string) ([]AppSource, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("manifests dir %s does not exist", dir)
		}
		return nil, fmt.Errorf("read manifests dir: %w", err)
	}
	var out []AppSource
	var total int64
	for _, e := range entries {
		if !manifests.IsManifest(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		fi, err := os.Stat(p) // follows symlinks, as the manifests dir does
		if err != nil {
			return nil, fmt.Errorf("manifest %s: %w", p, err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		if fi.Size() > maxAppFile {
			return nil, fmt.Errorf("manifest %s is %d bytes: at most %d are allowed", p, fi.Size(), maxAppFile)
		}
		if total += fi.Size(); total > maxAppTotal {
			return nil, fmt.Errorf("the manifests of %s are more than %d bytes together", dir, maxAppTotal)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read manifest: %w", err)
		}
		out = append(out, AppSource{Name: e.Name(), Data: data})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("manifests dir %s holds no .yaml, .yml or .json file", dir)
	}
	if err := checkAppSources(out); err != nil {
		return nil, fmt.Errorf("manifests dir %s: %w", dir, err)
	}
	return out, nil
}

// checkAppSources checks an application's files: valid names, each
// parses as the applier parses it and holds at least one object.
func checkAppSources(files []AppSource) error {
	seen := map[string]bool{}
	for _, f := range files {
		if err := CheckAppFileName(f.Name); err != nil {
			return err
		}
		if seen[f.Name] {
			return fmt.Errorf("manifest %s is given twice", f.Name)
		}
		seen[f.Name] = true
		objs, err := manifests.Parse(f.Data)
		if err != nil {
			return fmt.Errorf("manifest %s does not parse: %w", f.Name, err)
		}
		if len(objs) == 0 {
			return fmt.Errorf("manifest %s holds no Kubernetes object", f.Name)
		}
	}
	return nil
}

// AppsDir is where a node keeps the applications its bundles installed:
// one directory per application, holding its manifests and .bundle.json.
// The manifests applier (services/manifests) applies them from there.
func AppsDir(dataDir string) string { return filepath.Join(dataDir, "airgap", "manifests") }

// appInfoFile records, in an application's directory, which bundle
// installed it.
const appInfoFile = ".bundle.json"

// AppInfo is what an application's directory records about its bundle.
type AppInfo struct {
	App         string        `json:"app"`
	Bundle      digest.Digest `json:"bundle"`
	Created     time.Time     `json:"created"`
	InstalledAt time.Time     `json:"installedAt"`
	Files       []string      `json:"files"`
}

// InstalledApp reads what installed application name under root; nil when
// it is not installed.
func InstalledApp(root, name string) (*AppInfo, error) {
	data, err := os.ReadFile(filepath.Join(root, name, appInfoFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read application %s: %w", name, err)
	}
	var info AppInfo
	if err := json.Unmarshal(data, &info); err != nil {
		return nil, fmt.Errorf("application %s: %s: %w", name, appInfoFile, err)
	}
	return &info, nil
}

// AppDowngrade is an application that a bundle would move back to an
// older bundle's version.
type AppDowngrade struct {
	App              string
	From, To         digest.Digest
	FromTime, ToTime time.Time
}

func (d AppDowngrade) Error() string {
	return fmt.Sprintf("application %s: this bundle (%s, created %s) is older than the one installed (%s, created %s): refusing to move it back (kubox airgap import --allow-downgrade does it on purpose)",
		d.App, shortID(d.To), d.ToTime.Format(time.RFC3339), shortID(d.From), d.FromTime.Format(time.RFC3339))
}

func shortID(d digest.Digest) string {
	if e := d.Encoded(); len(e) > 12 {
		return e[:12]
	}
	return d.String()
}

// CheckAppDowngrade refuses a bundle whose application is installed
// from a bundle created later.
func CheckAppDowngrade(root string, id digest.Digest, m *Manifest) error {
	if m.App == "" {
		return nil
	}
	info, err := InstalledApp(root, m.App)
	if err != nil || info == nil {
		return err
	}
	if info.Bundle != id && info.Created.After(m.Created) {
		return AppDowngrade{App: m.App, From: info.Bundle, To: id, FromTime: info.Created, ToTime: m.Created}
	}
	return nil
}

// AppChange is what InstallApp changed.
type AppChange struct {
	App                    string
	Written, Same, Removed int
}

// InstallApp makes root/<app> hold exactly the bundle's manifests: files
// new or changed are written (temp file renamed into place, 0600: they may
// hold Secrets), then files the bundle no longer has are removed, so the
// applier applies the new version of a file before it deletes what left
// with a removed one (an object moved between files stays). Files whose
// content did not change are left alone.
func InstallApp(root string, id digest.Digest, m *Manifest, files []AppSource) (AppChange, error) {
	ch := AppChange{App: m.App}
	if err := CheckAppName(m.App); err != nil {
		return ch, err
	}
	dir := filepath.Join(root, m.App)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return ch, fmt.Errorf("install application %s: %w", m.App, err)
	}
	keep := map[string]bool{appInfoFile: true}
	info := AppInfo{App: m.App, Bundle: id, Created: m.Created, InstalledAt: time.Now().UTC()}
	for _, f := range files {
		if err := CheckAppFileName(f.Name); err != nil {
			return ch, err
		}
		keep[f.Name] = true
		info.Files = append(info.Files, f.Name)
		wrote, err := fsutil.WriteFileIfChanged(filepath.Join(dir, f.Name), f.Data, 0o600)
		if err != nil {
			return ch, fmt.Errorf("install application %s: %w", m.App, err)
		}
		if wrote {
			ch.Written++
		} else {
			ch.Same++
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ch, fmt.Errorf("install application %s: %w", m.App, err)
	}
	for _, e := range entries {
		if keep[e.Name()] || !manifests.IsManifest(e.Name()) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return ch, fmt.Errorf("install application %s: remove a file the bundle no longer has: %w", m.App, err)
		}
		ch.Removed++
	}
	slices.Sort(info.Files)
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return ch, err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, appInfoFile), data, 0o600); err != nil {
		return ch, fmt.Errorf("install application %s: %w", m.App, err)
	}
	return ch, fsutil.SyncDir(dir)
}
