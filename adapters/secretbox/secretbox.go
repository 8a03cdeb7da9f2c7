// Package secretbox seals app secrets under the platform's secret key
// (AES-256-GCM, random nonce), so that the ledger never holds a secret in
// the clear. The key comes from configuration; losing it makes every app's
// secret unusable.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
)

// ErrOpen: the ciphertext was not sealed under this key, or was altered.
var ErrOpen = errors.New("secretbox: cannot open: wrong key or corrupted")

// Box seals and opens secrets. It remembers what it opened, so a secret
// used on every request or send is decrypted once per process.
type Box struct {
	aead   cipher.AEAD
	opened sync.Map // associated + "\x00" + sealed -> plain
}

// New returns a Box for a 32-byte key.
func New(key []byte) (*Box, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("secretbox: key must be 32 bytes, got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Box{aead: aead}, nil
}

// ParseKey decodes a key written as 64 hex digits or as base64 of 32 bytes.
func ParseKey(s string) ([]byte, error) {
	if b, err := hex.DecodeString(s); err == nil && len(b) == 32 {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == 32 {
			return b, nil
		}
	}
	return nil, errors.New("secretbox: key must be 32 bytes as 64 hex digits or base64")
}

// NewKey returns a fresh random key as hex.
func NewKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Seal encrypts plain; the associated data binds the ciphertext to its
// owner (e.g. the app id) so it cannot be moved to another app.
func (b *Box) Seal(plain, associated []byte) []byte {
	nonce := make([]byte, b.aead.NonceSize(), b.aead.NonceSize()+len(plain)+b.aead.Overhead())
	_, _ = rand.Read(nonce)
	return b.aead.Seal(nonce, nonce, plain, associated)
}

// Open decrypts what Seal produced with the same associated data. The
// returned slice is shared by every caller: do not modify it.
func (b *Box) Open(sealed, associated []byte) ([]byte, error) {
	k := string(associated) + "\x00" + string(sealed)
	if v, ok := b.opened.Load(k); ok {
		return v.([]byte), nil
	}
	plain, err := b.open(sealed, associated)
	if err != nil {
		return nil, err
	}
	b.opened.Store(k, plain)
	return plain, nil
}

func (b *Box) open(sealed, associated []byte) ([]byte, error) {
	n := b.aead.NonceSize()
	if len(sealed) < n+b.aead.Overhead() {
		return nil, ErrOpen
	}
	out, err := b.aead.Open(nil, sealed[:n], sealed[n:], associated)
	if err != nil {
		return nil, ErrOpen
	}
	return out, nil
}
