package backup

import (
	"fmt"
	"os"
)

// ReadHeader reads the plaintext header of the snapshot at path, and returns
// it with the file's size. It needs no key, and so proves nothing: the
// header is authenticated only by Verify and Extract.
func ReadHeader(path string) (Header, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return Header{}, 0, fmt.Errorf("read snapshot header: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Header{}, 0, fmt.Errorf("read snapshot header: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return Header{}, 0, fmt.Errorf("read snapshot header %s: %w: not a regular file", path, ErrNotSnapshot)
	}
	_, h, err := readPrefix(f)
	if err != nil {
		return Header{}, 0, fmt.Errorf("read snapshot header %s: %w", path, err)
	}
	return h, fi.Size(), nil
}

// Verify reads the whole snapshot at path and checks everything (signer,
// key, authentication, structure, sizes, digests, signature), writing
// nothing. key nil accepts only a snapshot written with InsecurePlaintext; a
// key accepts only an encrypted one. trust says which signer to accept
// (snapshots of format versions 1 and 2 are unsigned and accepted: see
// SignatureWarning). The returned header is authenticated.
func Verify(path string, key *Key, trust Trust) (Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return Header{}, fmt.Errorf("verify snapshot: %w", err)
	}
	defer f.Close()
	h, err := readSnapshot(f, key, trust, discard{})
	if err != nil {
		return Header{}, fmt.Errorf("verify snapshot %s: %w", path, err)
	}
	return h, nil
}
