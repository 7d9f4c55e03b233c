package bootstrap

import (
	"crypto/x509"
	"net"
	"testing"
	"time"
)

func TestNeedsRenewal(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	year := &x509.Certificate{NotBefore: start, NotAfter: start.Add(360 * 24 * time.Hour)} // a third is 120 days
	tests := []struct {
		name string
		cert *x509.Certificate
		now  time.Time
		want bool
	}{
		{"just issued", year, start.Add(time.Minute), false},
		{"half way", year, start.Add(180 * 24 * time.Hour), false},
		{"121 days left", year, start.Add(239 * 24 * time.Hour), false},
		{"exactly a third left", year, start.Add(240 * 24 * time.Hour), false},
		{"a second under a third left", year, start.Add(240*24*time.Hour + time.Second), true},
		{"a day left", year, start.Add(359 * 24 * time.Hour), true},
		{"expired", year, start.Add(400 * 24 * time.Hour), true},
		{"not yet valid (clock behind)", year, start.Add(-time.Hour), false},
		{"zero lifetime", &x509.Certificate{NotBefore: start, NotAfter: start}, start, true},
		{"nil cert", nil, start, true},
		{"short-lived cert early", &x509.Certificate{NotBefore: start, NotAfter: start.Add(3 * time.Hour)}, start.Add(time.Hour), false},
		{"short-lived cert late", &x509.Certificate{NotBefore: start, NotAfter: start.Add(3 * time.Hour)}, start.Add(2*time.Hour + time.Minute), true},
	}
	for _, tt := range tests {
		if got := NeedsRenewal(tt.cert, tt.now); got != tt.want {
			t.Errorf("%s: NeedsRenewal = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestFirstServiceIP(t *testing.T) {
	for cidr, want := range map[string]string{
		"10.43.0.0/16":  "10.43.0.1",
		"10.43.7.9/16":  "10.43.0.1",
		"10.96.0.0/12":  "10.96.0.1",
		"fd00:43::/112": "fd00:43::1",
	} {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		ip, err := firstServiceIP(n)
		if err != nil || ip.String() != want {
			t.Errorf("firstServiceIP(%s) = %v, %v; want %s", cidr, ip, err, want)
		}
	}
	_, n, _ := net.ParseCIDR("10.0.0.5/32")
	if _, err := firstServiceIP(n); err == nil {
		t.Error("firstServiceIP(/32) succeeded")
	}
}
