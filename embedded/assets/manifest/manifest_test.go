package manifest

import (
	"strings"
	"testing"
)

func valid() Entry {
	return Entry{Name: "runc", Component: "runc", Version: "v1.5.2", Kind: Binary, Size: 3,
		SHA256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}
}

func TestRoundTrip(t *testing.T) {
	b, err := valid().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	e, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if e != valid() {
		t.Errorf("round trip: %+v, want %+v", e, valid())
	}
	if e.BlobName() != "runc.zst" || e.EntryName() != "runc.json" {
		t.Errorf("file names %s, %s", e.BlobName(), e.EntryName())
	}
}

func TestValidateRejects(t *testing.T) {
	for name, mutate := range map[string]func(*Entry){
		"path name":      func(e *Entry) { e.Name = "../runc" },
		"nested name":    func(e *Entry) { e.Name = "bin/runc" },
		"hidden name":    func(e *Entry) { e.Name = ".kubox-assets-x" },
		"no version":     func(e *Entry) { e.Version = "" },
		"no component":   func(e *Entry) { e.Component = "" },
		"unknown kind":   func(e *Entry) { e.Kind = "tarball" },
		"negative size":  func(e *Entry) { e.Size = -1 },
		"short digest":   func(e *Entry) { e.SHA256 = "abc" },
		"uppercase hex":  func(e *Entry) { e.SHA256 = strings.ToUpper(e.SHA256) },
		"not hex at all": func(e *Entry) { e.SHA256 = strings.Repeat("zz", 32) },
		"own dictionary": func(e *Entry) { e.Dict = e.Name },
		"dict path":      func(e *Entry) { e.Dict = "../shim" },
	} {
		e := valid()
		mutate(&e)
		if err := e.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, e)
		}
	}
	if _, err := Parse([]byte("{not json")); err == nil {
		t.Error("Parse accepted invalid JSON")
	}
}

func TestDictRoundTripAndID(t *testing.T) {
	e := valid()
	e.Dict = "containerd-shim-runc-v2"
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if back != e {
		t.Errorf("round trip: %+v, want %+v", back, e)
	}
	other := valid()
	other.SHA256 = "ca7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	id := e.DictID()
	if id < 32768 || id >= 1<<31 {
		t.Errorf("DictID %d is in a range zstd reserves", id)
	}
	if id != valid().DictID() || id == other.DictID() {
		t.Errorf("DictID must follow the digest: %d, same digest %d, other digest %d", id, valid().DictID(), other.DictID())
	}
}
