package bootstrap

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/kubox/kubox/internal/fsutil"
)

// Join tokens look like kubeadm's and k3s's: K10<sha256 of the cluster CA's
// SubjectPublicKeyInfo, hex>::<id>.<secret>. The id and secret are those of a
// Kubernetes bootstrap token (kube-system/bootstrap-token-<id>), so the
// apiserver's own bootstrap-token authenticator checks the secret and the
// expiry.
const tokenPrefix = "K10"

var (
	tokenIDRe     = regexp.MustCompile(`^[a-z0-9]{6}$`)
	tokenSecretRe = regexp.MustCompile(`^[a-z0-9]{16}$`)
	caHashRe      = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Token is a parsed join token.
type Token struct {
	CAHash string // hex sha256 of the CA's SubjectPublicKeyInfo
	ID     string // [a-z0-9]{6}
	Secret string // [a-z0-9]{16}
}

// String is the token as a user types it. It holds the secret: never log it.
func (t Token) String() string {
	return tokenPrefix + t.CAHash + "::" + t.ID + "." + t.Secret
}

// Bearer is the bootstrap token the apiserver authenticates.
func (t Token) Bearer() string { return t.ID + "." + t.Secret }

// ErrBadToken says a string is not a join token; the message never repeats
// the string, which may be a secret.
var ErrBadToken = errors.New("not a kubox join token: expected K10<64 hex digits>::<6 chars>.<16 chars>, as printed by `kubox token create`")

// ParseToken parses a token as printed by `kubox token create`.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, tokenPrefix)
	if !ok {
		return Token{}, ErrBadToken
	}
	hash, cred, ok := strings.Cut(rest, "::")
	if !ok {
		return Token{}, ErrBadToken
	}
	id, secret, ok := strings.Cut(cred, ".")
	hash = strings.ToLower(hash)
	if !ok || !caHashRe.MatchString(hash) || !tokenIDRe.MatchString(id) || !tokenSecretRe.MatchString(secret) {
		return Token{}, ErrBadToken
	}
	return Token{CAHash: hash, ID: id, Secret: secret}, nil
}

// NewToken returns a fresh random token pinning the CA with hash caHash.
func NewToken(caHash string) (Token, error) {
	id, err := randomString(6)
	if err != nil {
		return Token{}, err
	}
	secret, err := randomString(16)
	if err != nil {
		return Token{}, err
	}
	return Token{CAHash: caHash, ID: id, Secret: secret}, nil
}

func randomString(n int) (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		v, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			return "", fmt.Errorf("random token: %w", err)
		}
		b[i] = alphabet[v.Int64()]
	}
	return string(b), nil
}

// CAHash is the hex sha256 of a certificate's SubjectPublicKeyInfo, as
// kubeadm's --discovery-token-ca-cert-hash.
func CAHash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// CAHashFile is CAHash of the PEM certificate at path.
func CAHashFile(path string) (string, error) {
	cert, _, err := loadCert(path)
	if err != nil {
		return "", err
	}
	return CAHash(cert), nil
}

// ErrCAMismatch is returned when the server does not present the pinned CA.
var ErrCAMismatch = errors.New("CA hash mismatch")

// PinnedTLSConfig trusts exactly one CA: the one whose SPKI hash is caHash,
// which the server must send in its chain. The handshake fails (and so
// nothing is sent) if the server presents no such CA or a serving cert the
// CA did not sign for host.
func PinnedTLSConfig(caHash, host string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verification is done below against the pinned CA only.
		InsecureSkipVerify: true, //nolint:gosec
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := verifyPinned(cs.PeerCertificates, caHash, host)
			return err
		},
	}
}

func verifyPinned(chain []*x509.Certificate, caHash, host string) (*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("server sent no certificate")
	}
	var ca *x509.Certificate
	var seen []string
	for _, c := range chain[1:] {
		if !c.IsCA {
			continue
		}
		h := CAHash(c)
		seen = append(seen, "sha256:"+h)
		if h == caHash {
			ca = c
		}
	}
	if ca == nil {
		if len(seen) == 0 {
			seen = []string{"none"}
		}
		return nil, fmt.Errorf("%w: the server's CA is %s, the token pins sha256:%s", ErrCAMismatch, strings.Join(seen, ","), caHash)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
		return nil, fmt.Errorf("%w: the serving certificate does not verify against the pinned CA: %v", ErrCAMismatch, err)
	}
	return ca, nil
}

// Discover dials addr (host:port) and returns the pinned CA the server
// presents. Only a TLS handshake takes place: no request, no secret.
func Discover(ctx context.Context, addr, caHash string) (*x509.Certificate, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	d := tls.Dialer{Config: &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true}} //nolint:gosec // verified below, before anything is sent
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	defer conn.Close()
	return verifyPinned(conn.(*tls.Conn).ConnectionState().PeerCertificates, caHash, host)
}

// ServingChainFile is where WriteServingChain puts the apiserver's serving
// cert followed by the cluster CA, so that a joining box can pin the CA by
// its hash during the TLS handshake, before it sends its token.
func (p *PKI) ServingChainFile() string { return filepath.Join(p.Dir, "apiserver-chain.crt") }

// WriteServingChain (re)writes ServingChainFile from the current apiserver
// cert and cluster CA; it only touches the file when its content changes.
func (p *PKI) WriteServingChain() error {
	leaf, err := os.ReadFile(p.APIServerCert)
	if err != nil {
		return fmt.Errorf("read apiserver cert: %w", err)
	}
	ca, err := os.ReadFile(p.CACert)
	if err != nil {
		return fmt.Errorf("read cluster CA: %w", err)
	}
	chain := append(bytes.TrimSpace(leaf), '\n')
	chain = append(chain, bytes.TrimSpace(ca)...)
	chain = append(chain, '\n')
	if _, err := fsutil.WriteFileIfChanged(p.ServingChainFile(), chain, modeCert); err != nil {
		return fmt.Errorf("write apiserver serving chain: %w", err)
	}
	return nil
}

// SharedFiles are the PKI files every box of a cluster must hold alike: the
// CAs with their keys, the service-account key pair and the secrets-at-rest
// encryption config. A joining box receives them; it issues its own leaves.
var SharedFiles = []string{
	"ca.crt", "ca.key", "client-ca.crt", "client-ca.key",
	"request-header-ca.crt", "request-header-ca.key",
	"etcd/server-ca.crt", "etcd/server-ca.key", "etcd/peer-ca.crt", "etcd/peer-ca.key",
	"sa.key", "sa.pub", "encryption-config.yaml",
}

// ReadShared reads SharedFiles from a PKI dir.
func ReadShared(dir string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(SharedFiles))
	for _, name := range SharedFiles {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("read shared PKI file: %w", err)
		}
		out[name] = data
	}
	return out, nil
}

// CheckShared checks that files holds every shared file, parseable, and
// returns the hash of its cluster CA.
func CheckShared(files map[string][]byte) (string, error) {
	for _, name := range SharedFiles {
		data, ok := files[name]
		if !ok || len(data) == 0 {
			return "", fmt.Errorf("shared PKI lacks %s", name)
		}
		switch {
		case strings.HasSuffix(name, ".crt"):
			if _, err := parseCert(data); err != nil {
				return "", fmt.Errorf("shared PKI %s: %w", name, err)
			}
		case strings.HasSuffix(name, ".key"):
			if _, err := parseKey(data); err != nil {
				return "", fmt.Errorf("shared PKI %s: %w", name, err)
			}
		}
	}
	for name := range files {
		if !slices.Contains(SharedFiles, name) {
			return "", fmt.Errorf("shared PKI has unexpected file %q", name)
		}
	}
	ca, err := parseCert(files["ca.crt"])
	if err != nil {
		return "", err
	}
	return CAHash(ca), nil
}

// WriteShared installs the shared files into dir (keys and the encryption
// config 0600, certs 0644), each by temp file, fsync and rename. A file
// already there with other content is an error: a box never silently
// swaps its CAs.
func WriteShared(dir string, files map[string][]byte) error {
	if _, err := CheckShared(files); err != nil {
		return err
	}
	for _, d := range []string{dir, filepath.Join(dir, "etcd")} {
		if err := fsutil.EnsureDir(d, modeDir); err != nil {
			return fmt.Errorf("prepare PKI: %w", err)
		}
	}
	for _, name := range SharedFiles {
		path := filepath.Join(dir, name)
		have, err := os.ReadFile(path)
		if err == nil {
			if !bytes.Equal(have, files[name]) {
				return fmt.Errorf("%s exists with other content: this box already has a PKI of another cluster", path)
			}
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		mode := modePrivate
		if strings.HasSuffix(name, ".crt") || name == "sa.pub" {
			mode = modeCert
		}
		if err := fsutil.WriteFileNew(path, files[name], mode); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}

// EtcdClientTLS returns a client TLS config for the etcd of a cluster whose
// shared files are given: a short-lived client certificate, made in memory
// from the etcd server CA, that never touches the disk.
func EtcdClientTLS(files map[string][]byte, lifetime time.Duration) (*tls.Config, error) {
	caCert, err := parseCert(files["etcd/server-ca.crt"])
	if err != nil {
		return nil, err
	}
	caKey, err := parseKey(files["etcd/server-ca.key"])
	if err != nil {
		return nil, err
	}
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	certPEM, err := signLeaf(&authority{cert: caCert, key: caKey}, certSpec{
		commonName: "kubox-join", usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, lifetime: lifetime,
	}, key.Public(), now)
	if err != nil {
		return nil, fmt.Errorf("issue etcd client cert for the join: %w", err)
	}
	leaf, err := parseCert(certPEM)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		RootCAs:      pool,
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}},
	}, nil
}
