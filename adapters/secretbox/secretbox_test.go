package secretbox_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/pushledger/pushledger/adapters/secretbox"
)

func TestSealOpen(t *testing.T) {
	key, err := secretbox.ParseKey(secretbox.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	box, err := secretbox.New(key)
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("sk_app-secret")
	a, b := box.Seal(plain, []byte("app1")), box.Seal(plain, []byte("app1"))
	if bytes.Equal(a, b) {
		t.Error("two seals of the same secret are equal: the nonce is not random")
	}
	if bytes.Contains(a, plain) {
		t.Error("the ciphertext contains the secret")
	}
	got, err := box.Open(a, []byte("app1"))
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	// Bound to its owner, its key, and its bytes.
	if _, err := box.Open(a, []byte("app2")); !errors.Is(err, secretbox.ErrOpen) {
		t.Errorf("opened under another app: %v", err)
	}
	other, _ := secretbox.New(bytes.Repeat([]byte{7}, 32))
	if _, err := other.Open(a, []byte("app1")); !errors.Is(err, secretbox.ErrOpen) {
		t.Errorf("opened under another key: %v", err)
	}
	a[len(a)-1] ^= 1
	if _, err := box.Open(a, []byte("app1")); !errors.Is(err, secretbox.ErrOpen) {
		t.Errorf("opened a tampered ciphertext: %v", err)
	}
	if _, err := box.Open([]byte("short"), nil); !errors.Is(err, secretbox.ErrOpen) {
		t.Errorf("opened a short ciphertext: %v", err)
	}
}

func TestParseKey(t *testing.T) {
	raw := bytes.Repeat([]byte{0xab}, 32)
	for _, s := range []string{hex.EncodeToString(raw), base64.StdEncoding.EncodeToString(raw), base64.RawURLEncoding.EncodeToString(raw)} {
		got, err := secretbox.ParseKey(s)
		if err != nil || !bytes.Equal(got, raw) {
			t.Errorf("ParseKey(%q) = %x, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "abcd", hex.EncodeToString(raw[:31])} {
		if _, err := secretbox.ParseKey(s); err == nil {
			t.Errorf("ParseKey(%q) accepted", s)
		}
	}
	if _, err := secretbox.New(raw[:16]); err == nil {
		t.Error("New accepted a 16-byte key")
	}
}
