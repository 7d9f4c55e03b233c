// Package manifest is the small metadata format shared by the build tool that
// packs kubox's runtime assets (hack/assetpack) and the package that unpacks
// them at run time (embedded/assets).
//
// Each asset is two files side by side: NAME.zst, the zstd-compressed content,
// and NAME.json, an Entry. Keeping the digest and size of the uncompressed
// content in the Entry lets kubox verify what it decompresses and tell whether
// an installed copy is current without decompressing anything.
package manifest

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"strings"
)

// Kind says what an asset is for.
type Kind string

const (
	// Binary assets are executables installed into kubox's bin directory.
	Binary Kind = "binary"
	// Image assets are OCI image archives imported into containerd.
	Image Kind = "image"
)

const (
	// EntrySuffix ends the name of every metadata file.
	EntrySuffix = ".json"
	// BlobSuffix ends the name of every compressed content file.
	BlobSuffix = ".zst"
)

// Entry describes one asset.
type Entry struct {
	// Name is the uncompressed file's name: the installed file name of a
	// binary (e.g. "runc"), or e.g. "pause.tar" for an image archive.
	Name string `json:"name"`
	// Component groups assets for version reporting, e.g. the four CNI
	// plugins are all component "cni-plugins".
	Component string `json:"component"`
	// Version of the component, as its upstream spells it.
	Version string `json:"version"`
	Kind    Kind   `json:"kind"`
	// Size and SHA256 (lower-case hex) are those of the uncompressed content.
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Dict, when set, names the asset whose uncompressed content is the raw
	// zstd dictionary this one's blob was compressed with. The embedded
	// binaries are Go programs sharing their runtime and many libraries, so
	// compressed against one of them they shrink to a third or less. A
	// dictionary asset has no Dict of its own.
	Dict string `json:"dict,omitempty"`
}

// DictID is the zstd dictionary ID that blobs compressed against e's content
// carry. It comes from e's digest, so a blob decoded against any other
// content fails as "unknown dictionary" rather than as a digest mismatch. It
// stays clear of the IDs the zstd format reserves (below 32768, from 2^31).
func (e Entry) DictID() uint32 {
	b, err := hex.DecodeString(e.SHA256)
	if err != nil || len(b) < 4 {
		return 32768 // unreachable for a validated entry
	}
	return 32768 + binary.BigEndian.Uint32(b)%(1<<31-32768)
}

// BlobName is the name of the file holding the compressed content.
func (e Entry) BlobName() string { return e.Name + BlobSuffix }

// EntryName is the name of the file holding e itself.
func (e Entry) EntryName() string { return e.Name + EntrySuffix }

// Validate checks that e can be used safely, in particular that its name
// cannot escape the directory it is installed into.
func (e Entry) Validate() error {
	if e.Name == "" || e.Name != path.Base(e.Name) || strings.HasPrefix(e.Name, ".") {
		return fmt.Errorf("asset name %q: must be a plain file name", e.Name)
	}
	if e.Component == "" || e.Version == "" {
		return fmt.Errorf("asset %s: component and version are required", e.Name)
	}
	if e.Kind != Binary && e.Kind != Image {
		return fmt.Errorf("asset %s: unknown kind %q", e.Name, e.Kind)
	}
	if e.Dict != "" && (e.Dict == e.Name || e.Dict != path.Base(e.Dict) || strings.HasPrefix(e.Dict, ".")) {
		return fmt.Errorf("asset %s: dictionary %q must name another asset", e.Name, e.Dict)
	}
	if e.Size < 0 {
		return fmt.Errorf("asset %s: negative size", e.Name)
	}
	if b, err := hex.DecodeString(e.SHA256); err != nil || len(b) != 32 || strings.ToLower(e.SHA256) != e.SHA256 {
		return fmt.Errorf("asset %s: sha256 %q is not a lower-case hex SHA-256 digest", e.Name, e.SHA256)
	}
	return nil
}

// Marshal encodes e as the content of its metadata file.
func (e Entry) Marshal() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding asset %s: %w", e.Name, err)
	}
	return append(b, '\n'), nil
}

// Parse decodes and validates a metadata file.
func Parse(b []byte) (Entry, error) {
	var e Entry
	if err := json.Unmarshal(b, &e); err != nil {
		return Entry{}, fmt.Errorf("decoding asset metadata: %w", err)
	}
	if err := e.Validate(); err != nil {
		return Entry{}, err
	}
	return e, nil
}
