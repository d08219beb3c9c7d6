package meshcorpus

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// A fuzz case written by FormatFuzzCase is read back by ParseFuzzCase, byte for byte, as Go
// writes and reads testdata/fuzz files.
func TestFuzzCaseRoundTrip(t *testing.T) {
	for _, data := range [][]byte{nil, []byte("a: b\n---\n\"q\" \\ \x00\xff"), []byte("# proxy: x\n")} {
		got, err := ParseFuzzCase(FormatFuzzCase(data))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("round trip of %q: %q, %v", data, got, err)
		}
	}
	if _, err := ParseFuzzCase([]byte("go test fuzz v1\nstring(\"a\")\n")); err == nil {
		t.Error("a string argument was taken for []byte")
	}
}

// Accepted keeps the documents that validate on their own, and of two that define one object
// the first, as the folder loader does with files.
func TestAccepted(t *testing.T) {
	data := []byte("# comment\n" +
		"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a, namespace: default}\nspec: {address: 10.0.0.1}\n" +
		"--- \napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a, namespace: default}\nspec: {address: 10.0.0.2}\n" +
		"---\nkind: Nonsense\n" +
		"--- apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: b, namespace: default}\nspec: {address: 10.0.0.3}\n")
	docs := Accepted(data)
	var names []string
	for _, o := range Objects(docs) {
		names = append(names, o.GetName())
	}
	if len(docs) != 2 || len(names) != 2 || names[0] != "a" || names[1] != "b" {
		t.Fatalf("accepted %d documents defining %v; want a (the first) and b", len(docs), names)
	}
	if !bytes.Contains(docs[0].Data, []byte("10.0.0.1")) {
		t.Errorf("the first definition of a was not the one kept: %s", docs[0].Data)
	}
}

// Every seed exists and pilot accepts something of each.
func TestSeeds(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	seeds, err := Seeds(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range seeds {
		if len(Accepted(s.Data)) == 0 {
			t.Errorf("%s: no document accepted", s.Name)
		}
	}
	if _, err := os.Stat(filepath.Join(root, FuzzDir)); err != nil {
		t.Errorf("the fuzz cases' folder: %v", err)
	}
}
