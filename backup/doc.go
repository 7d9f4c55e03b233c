// Package backup reads and writes kubox snapshot files: one file holding an
// etcd snapshot and the cluster's PKI (CAs and keys, service-account keys,
// the secrets-at-rest encryption config), compressed with zstd and encrypted
// with age, and signed with ed25519, so that a restore onto a brand-new box
// needs nothing but the file and the backup key. It also creates and loads
// the keys, and lists and prunes a snapshot directory. Scheduling, metrics and the restore procedure
// itself live elsewhere; this package is the file format and its guarantees.
//
// # Guarantees
//
//   - No plaintext byte reaches the disk when writing: the etcd stream and the
//     PKI files go through zstd and age in memory, and only ciphertext is
//     written, to a temp file (0600, directory 0700) that is fsynced and then
//     renamed to its final name without replacing any existing file.
//     InsecurePlaintext is the one exception, and it is recorded in the header.
//   - Memory is bounded: the etcd stream is read in parts of 4 MiB (two in
//     flight, so that reading, hashing and compressing overlap) and never
//     buffered whole.
//   - Every byte of the file is authenticated: a changed, missing, reordered or
//     appended byte anywhere makes Verify and Extract fail. Reading is all or
//     nothing: Extract writes into a temp directory beside its target and
//     renames it into place only after the whole file has been verified.
//   - Only the boxes make snapshots that read: a snapshot is signed with
//     the signing key, which only the boxes hold, over its header and the
//     digest of its body; readers refuse one that is unsigned or signed by
//     another key than the one they trust (Trust). Knowing the public
//     recipient is not enough to make a snapshot that restores.
//   - Failures are one line each and classified by sentinel errors (use
//     errors.Is): ErrNotSnapshot, ErrNewerVersion, ErrWrongKey,
//     ErrKeyRequired, ErrUnencrypted, ErrCorrupted, ErrDigestMismatch,
//     ErrUnsigned, ErrBadSignature, and for key files ErrKeyPermissions and
//     ErrNotKey.
//
// # File format, version 3
//
//	offset  size  content
//	0       9     magic "KUBOXSNAP"
//	9       1     format version, 3 (1 and 2 are still read)
//	10      4     header length N, big-endian uint32, at most 64 KiB
//	14      N     header: a JSON object (see Header), padded with spaces
//	14+N    ...   body
//	end-72  72    signature block: "KUBOXSIG" and an ed25519 signature,
//	              present when Header.Signer is set
//
// The signature is by Header.Signer's key over "kubox snapshot signature
// v1\0", the BLAKE3-256 of the header bytes [0, 14+N) and the BLAKE3-256 of
// the body. Versions 1 and 2 have no signer and no signature block.
//
// The header is plaintext so that `kubox snapshot ls` works without the key.
// When Header.Encryption is "age-x25519" the body is an age v1 file
// (age-encryption.org/v1) encrypted to the X25519 recipient in
// Header.Recipient; when it is "none" the body is the zstd stream itself.
// Decrypted, the body is a zstd stream of a tar archive with, in this order:
//
//	pki/<name>          the PKI files, sorted by name, with their file modes
//	etcd.db.00000000    the etcd snapshot in parts of at most 4 MiB, numbered
//	etcd.db.00000001    from 0, whose concatenation is the db
//	...
//	header.sha256       hex SHA-256 of file bytes [0, 14+N) and a newline
//
// followed by the tar end-of-archive marker and nothing else.
//
// The header carries the db's size and BLAKE3-256 (SHA-256 in format
// version 1, which readers still accept), which are known only once the
// whole etcd stream has gone by, and Write never buffers the stream. So Write
// reserves room for the header, streams the body, fills the header in, and
// ends the body with the digest of the final header bytes (magic, version,
// length, JSON and padding). That last entry binds the plaintext header to the
// authenticated body: any edit of the header fails verification. age
// authenticates the body in 64 KiB chunks with a marked final chunk, so bit
// flips, reordering and truncation of the body are detected; the reader also
// insists on the tar end marker, the end of the zstd stream, the part
// numbering, and the sizes and digest recorded in the header.
//
// The etcd db is split into parts because a tar entry must declare its size
// before its data, and the size of etcd's snapshot stream is not known in
// advance.
//
// # The key
//
// The backup key is an age X25519 identity file as age-keygen writes it
// (comment lines and one AGE-SECRET-KEY-1... line), mode 0600. It is never
// stored in a snapshot. Because the body is plain age, zstd and tar, a
// snapshot can be opened without kubox in an emergency:
//
//	n=$(( 14 + $(head -c 14 FILE | tail -c 4 | od -An -tu4 --endian=big) ))
//	tail -c +$((n + 1)) FILE | head -c -72 | age -d -i backup.key | zstd -d | tar -x
//	cat etcd.db.* > etcd.db
package backup
