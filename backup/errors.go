package backup

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error this package returns for a bad snapshot or key
// file wraps exactly one of them, so callers (the CLI, restore) can print the
// error as one line and still branch on its kind with errors.Is.
var (
	// ErrNotSnapshot: the file does not start with the kubox snapshot magic.
	ErrNotSnapshot = errors.New("not a kubox snapshot")
	// ErrNewerVersion: the file's format version is newer than this code reads.
	ErrNewerVersion = errors.New("snapshot made by a newer kubox: upgrade kubox to read it")
	// ErrWrongKey: the snapshot is encrypted to another key than the one given.
	ErrWrongKey = errors.New("wrong backup key")
	// ErrKeyRequired: the snapshot is encrypted and no key was given, or a
	// write was asked for without a key and without InsecurePlaintext.
	ErrKeyRequired = errors.New("backup key required")
	// ErrUnencrypted: a key was given but the snapshot was written with
	// InsecurePlaintext. Refusing it stops an unencrypted file from being
	// slipped in where an encrypted one is expected; read it without a key to
	// accept it knowingly.
	ErrUnencrypted = errors.New("snapshot is not encrypted")
	// ErrCorrupted: the file is damaged or cut short (failed authentication,
	// bad structure, missing end).
	ErrCorrupted = errors.New("snapshot is corrupted or truncated")
	// ErrDigestMismatch: the content decrypted and parsed, but does not match
	// the digests or sizes in the header (for instance the plaintext header
	// was edited).
	ErrDigestMismatch = errors.New("snapshot content does not match its header")
	// ErrUnsigned: the snapshot is of a format that is signed, but carries
	// no signature. Snapshots of format versions 1 and 2, made before
	// snapshots were signed, are not refused for it.
	ErrUnsigned = errors.New("snapshot is not signed")
	// ErrBadSignature: the snapshot is signed by another key than the
	// trusted one, or its signature does not match its content: someone
	// without the boxes' signing key made or changed it.
	ErrBadSignature = errors.New("snapshot signature is not from the trusted signing key")
	// ErrKeyPermissions: the key file can be read by users other than its owner.
	ErrKeyPermissions = errors.New("backup key file permissions too open")
	// ErrNotKey: the key file is not an age X25519 identity file.
	ErrNotKey = errors.New("not an age X25519 identity file")
)

// corruptf returns an ErrCorrupted error with details.
func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupted, fmt.Sprintf(format, args...))
}

// mismatchf returns an ErrDigestMismatch error with details.
func mismatchf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrDigestMismatch, fmt.Sprintf(format, args...))
}
