// Package s3 keeps kubox snapshots in an S3-compatible object store (AWS
// S3, MinIO, SeaweedFS, Ceph RGW, Garage): streaming multipart uploads that
// become visible only when complete, listing, reading back, and retention
// under one box's own prefix. The snapshot format itself (encryption,
// signature) is package backup's; this package only moves its bytes.
package s3

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Config says where snapshots go off the box. Every field has a config key
// snapshot-s3-<field> (see README).
type Config struct {
	// Endpoint is host[:port] or https://host[:port]; http:// only with
	// Insecure. Empty: no object store.
	Endpoint string
	Bucket   string
	// Prefix is prepended to every object name; each box writes under
	// <Prefix>/<node name>/, so boxes and clusters can share a bucket.
	Prefix string
	Region string
	// CredentialsFile holds the access key (mode 0600, AWS shared
	// credentials format or KEY=VALUE lines); without it the
	// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY variables are used.
	CredentialsFile string
	// CAFile is a PEM bundle trusted besides the system's CAs.
	CAFile string
	// PathStyle addresses the bucket as https://host/bucket/ rather than
	// https://bucket.host/ (MinIO, SeaweedFS and Garage usually need it).
	PathStyle bool
	// Insecure allows a plain http:// endpoint. The snapshots are
	// encrypted and signed either way; the object store's credentials and
	// object names are not protected then. Certificates are always
	// verified (give CAFile for a private CA).
	Insecure bool
}

// Enabled says whether an object store is configured.
func (c Config) Enabled() bool { return c.Endpoint != "" || c.Bucket != "" }

// Validate checks the configuration without touching the network; every
// error is one line naming the key.
func (c Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	if c.Endpoint == "" {
		return errors.New("snapshot-s3-bucket is set but snapshot-s3-endpoint is not: give the object store's address, e.g. s3.example.com or https://10.0.0.5:9000")
	}
	if c.Bucket == "" {
		return errors.New("snapshot-s3-endpoint is set but snapshot-s3-bucket is not: give the bucket to keep snapshots in")
	}
	if _, _, err := c.endpoint(); err != nil {
		return err
	}
	if strings.Contains(c.Prefix, "..") || strings.HasPrefix(c.Prefix, "/") {
		return fmt.Errorf("snapshot-s3-prefix %q: use a relative path without \"..\", e.g. kubox/site-1", c.Prefix)
	}
	return nil
}

// endpoint returns host[:port] and whether to use TLS.
func (c Config) endpoint() (string, bool, error) {
	e := c.Endpoint
	if !strings.Contains(e, "://") {
		e = "https://" + e
	}
	u, err := url.Parse(e)
	if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return "", false, fmt.Errorf("snapshot-s3-endpoint %q: give host[:port] or https://host[:port], without a path", c.Endpoint)
	}
	switch u.Scheme {
	case "https":
		return u.Host, true, nil
	case "http":
		if !c.Insecure {
			return "", false, fmt.Errorf("snapshot-s3-endpoint %q is plain HTTP: use https, or set snapshot-s3-insecure to accept it", c.Endpoint)
		}
		return u.Host, false, nil
	default:
		return "", false, fmt.Errorf("snapshot-s3-endpoint %q: the scheme must be https (or http with snapshot-s3-insecure)", c.Endpoint)
	}
}

// credentials loads the access key from the file or the environment.
func (c Config) credentials() (*credentials.Credentials, error) {
	if c.CredentialsFile == "" {
		id, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
		if id == "" || secret == "" {
			return nil, errors.New("no S3 credentials: set snapshot-s3-credentials-file, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
		}
		return credentials.NewStaticV4(id, secret, os.Getenv("AWS_SESSION_TOKEN")), nil
	}
	f, err := os.Open(c.CredentialsFile)
	if err != nil {
		return nil, fmt.Errorf("snapshot-s3-credentials-file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("snapshot-s3-credentials-file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("snapshot-s3-credentials-file %s is mode %04o, readable by others: chmod 600 %s", c.CredentialsFile, fi.Mode().Perm(), c.CredentialsFile)
	}
	vals, err := parseCredentials(f)
	if err != nil {
		return nil, fmt.Errorf("snapshot-s3-credentials-file %s: %w", c.CredentialsFile, err)
	}
	return credentials.NewStaticV4(vals["aws_access_key_id"], vals["aws_secret_access_key"], vals["aws_session_token"]), nil
}

// parseCredentials reads the [default] (or only) profile of an AWS shared
// credentials file, or KEY=VALUE lines (AWS_ACCESS_KEY_ID=...); keys are
// returned lower-cased.
func parseCredentials(f *os.File) (map[string]string, error) {
	vals := map[string]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = strings.TrimSpace(line[1 : len(line)-1])
			continue
		}
		if section != "" && section != "default" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, errors.New("lines must be key = value (aws_access_key_id, aws_secret_access_key)")
		}
		k = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(k), "export ")))
		vals[k] = strings.Trim(strings.TrimSpace(v), `"'`)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if vals["aws_access_key_id"] == "" || vals["aws_secret_access_key"] == "" {
		return nil, errors.New("no aws_access_key_id and aws_secret_access_key in it")
	}
	return vals, nil
}

// client builds the minio-go client for c.
func (c Config) client() (*minio.Client, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	host, secure, err := c.endpoint()
	if err != nil {
		return nil, err
	}
	creds, err := c.credentials()
	if err != nil {
		return nil, err
	}
	tr, err := c.transport()
	if err != nil {
		return nil, err
	}
	lookup := minio.BucketLookupAuto
	if c.PathStyle {
		lookup = minio.BucketLookupPath
	}
	cl, err := minio.New(host, &minio.Options{
		Creds: creds, Secure: secure, Transport: tr, Region: c.Region, BucketLookup: lookup,
		// kubox retries a failed upload as a whole, with its own backoff;
		// a few quick retries here ride out a dropped connection.
		MaxRetries: 3,
	})
	if err != nil {
		return nil, fmt.Errorf("S3 client for %s: %w", c.Endpoint, err)
	}
	return cl, nil
}

func (c Config) transport() (*http.Transport, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("snapshot-s3-ca-file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(bytes.TrimSpace(pem)) {
			return nil, fmt.Errorf("snapshot-s3-ca-file %s: no PEM certificate in it", c.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
		ExpectContinueTimeout: time.Second,
		// minio-go sends Content-MD5/SHA-256 itself; gzip would only get
		// in the way of ranged reads.
		DisableCompression: true,
	}, nil
}
