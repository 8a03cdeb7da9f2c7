package gateway_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pushledger/pushledger/gateway"
)

func TestCredentials(t *testing.T) {
	now := time.Unix(1_795_488_044, 0)
	clock := func() time.Time { return now }
	oldKey := gateway.CredentialKey{ID: "2026-01", Secret: bytes.Repeat([]byte{1}, 32)}
	newKey := gateway.CredentialKey{ID: "2026-07", Secret: bytes.Repeat([]byte{2}, 32)}
	before, err := gateway.NewCredentials([]gateway.CredentialKey{oldKey}, gateway.WithClock(clock), gateway.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := gateway.NewCredentials([]gateway.CredentialKey{newKey, oldKey}, gateway.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}

	cred := before.Issue("pk_app", "phone-1")
	if want := "v1.2026-01.1795488044.1795491644."; !strings.HasPrefix(string(cred), want) || len(cred) != len(want)+43 {
		t.Errorf("credential %q, want %q + 43 characters", cred, want)
	}
	if iat, ok := before.IssuedAt(cred); !ok || iat != now.Unix() {
		t.Errorf("IssuedAt = %d %v, want %d", iat, ok, now.Unix())
	}
	for _, bad := range []string{"", "v1.k.x.0.mac", "v2.k.1.0.mac", "v1.k.01.0.mac", "v1.k.1.0"} {
		if iat, ok := before.IssuedAt([]byte(bad)); ok {
			t.Errorf("IssuedAt(%q) = %d, want none", bad, iat)
		}
	}
	tests := []struct {
		name string
		c    *gateway.Credentials
		app  string
		dev  string
		cred []byte
		at   time.Time
		want error
	}{
		{"valid", before, "pk_app", "phone-1", cred, now, nil},
		{"valid after rotation", rotated, "pk_app", "phone-1", cred, now, nil},
		{"issued by the new key", rotated, "pk_app", "phone-1", rotated.Issue("pk_app", "phone-1"), now, nil},
		{"new key unknown to the old set", before, "pk_app", "phone-1", rotated.Issue("pk_app", "phone-1"), now, gateway.ErrAuthFailed},
		{"last second", before, "pk_app", "phone-1", cred, now.Add(time.Hour - time.Second), nil},
		{"expired", before, "pk_app", "phone-1", cred, now.Add(time.Hour), gateway.ErrCredentialExpired},
		{"within clock skew", before, "pk_app", "phone-1", cred, now.Add(-4 * time.Minute), nil},
		{"beyond clock skew", before, "pk_app", "phone-1", cred, now.Add(-6 * time.Minute), gateway.ErrAuthFailed},
		{"other app", before, "pk_other", "phone-1", cred, now, gateway.ErrAuthFailed},
		{"other device", before, "pk_app", "phone-2", cred, now, gateway.ErrAuthFailed},
		{"boundary shift", before, "pk_ap", "pphone-1", cred, now, gateway.ErrAuthFailed},
		{"later expiry", before, "pk_app", "phone-1", []byte(strings.Replace(string(cred), ".1795491644.", ".1795491645.", 1)), now, gateway.ErrAuthFailed},
		{"no expiry", before, "pk_app", "phone-1", []byte(strings.Replace(string(cred), ".1795491644.", ".0.", 1)), now, gateway.ErrAuthFailed},
		{"signed time", before, "pk_app", "phone-1", []byte(strings.Replace(string(cred), ".1795488044.", ".+1795488044.", 1)), now, gateway.ErrAuthFailed},
		{"leading zero", before, "pk_app", "phone-1", []byte(strings.Replace(string(cred), ".1795488044.", ".01795488044.", 1)), now, gateway.ErrAuthFailed},
		{"padded MAC", before, "pk_app", "phone-1", append(bytes.Clone(cred), '='), now, gateway.ErrAuthFailed},
		{"extra field", before, "pk_app", "phone-1", append(bytes.Clone(cred), '.'), now, gateway.ErrAuthFailed},
		{"empty", before, "pk_app", "phone-1", nil, now, gateway.ErrAuthFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.c.Verify(tt.app, tt.dev, tt.cred, tt.at); !errors.Is(err, tt.want) {
				t.Errorf("Verify: %v, want %v", err, tt.want)
			}
		})
	}
	// Non-canonical base64: the last character's unused bits set.
	last := cred[len(cred)-1]
	for _, alt := range []byte("AQgw") {
		if alt == last {
			continue
		}
		mod := append(bytes.Clone(cred[:len(cred)-1]), alt)
		if rotated.Verify("pk_app", "phone-1", mod, now) == nil {
			t.Errorf("accepted %q besides %q", mod, cred)
		}
	}
}

func TestNewCredentialsValidation(t *testing.T) {
	_, err := gateway.NewCredentials([]gateway.CredentialKey{
		{ID: "a b", Secret: make([]byte, 32)},
		{ID: "k", Secret: make([]byte, 8)},
		{ID: "k", Secret: make([]byte, 32)},
	}, gateway.WithTTL(-time.Second))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`"a b"`, "8 bytes", "duplicate", "ttl"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s: %v", want, err)
		}
	}
	if _, err := gateway.NewCredentials(nil); err == nil {
		t.Error("no keys accepted")
	}
}

// FuzzVerify: Verify never panics and accepts a credential only for the
// (app, device) it was issued for, never a modified one.
func FuzzVerify(f *testing.F) {
	c, err := gateway.NewCredentials([]gateway.CredentialKey{{ID: "k1", Secret: bytes.Repeat([]byte{7}, 32)}})
	if err != nil {
		f.Fatal(err)
	}
	good := c.Issue("pk_app", "phone-1")
	f.Add("pk_app", "phone-1", good, 0, byte(0))
	f.Add("pk_app", "phone-1", good, 5, byte(1))
	f.Add("pk_app", "phone-2", []byte("v1.k1.0.0.AAAA"), 0, byte(0))
	f.Fuzz(func(t *testing.T, app, device string, cred []byte, pos int, flip byte) {
		now := time.Now()
		if flip != 0 && len(cred) > 0 {
			cred = bytes.Clone(cred)
			cred[uint(pos)%uint(len(cred))] ^= flip
		}
		err := c.Verify(app, device, cred, now)
		if err == nil && (app != "pk_app" || device != "phone-1" || !bytes.Equal(cred, good)) {
			t.Fatalf("accepted %q for %q/%q", cred, app, device)
		}
		if err != nil && !errors.Is(err, gateway.ErrAuthFailed) && !errors.Is(err, gateway.ErrCredentialExpired) {
			t.Fatalf("error %v", err)
		}
	})
}
