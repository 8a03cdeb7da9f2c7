package signing_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushledger/pushledger/api/signing"
)

// Known-answer vectors, computed once outside Go with:
//
//	printf '%s' '{"to":"user-42","title":"Hello","body":"Hi there"}' | openssl dgst -sha256 -r
//	printf 'POST\n/v1/apps/app_3f9c/messages\nchannel=apns&q=hello%%20world~&tag=a&tag=b&to=alice%%40example.com\n1700000000\nk3Jm9xQ2pL7vR4tZ8wYb_A\n%s' "$BODY_SHA" \
//	  | openssl dgst -sha256 -hmac 'whsec_demo_9d2f6a1e' -r
//
// The same example is worked through in docs/auth.md.
const (
	katSecret    = "whsec_demo_9d2f6a1e"
	katAppKey    = "app_3f9c"
	katMethod    = "post" // upper-cased by the scheme
	katPath      = "/v1/apps/app_3f9c/messages"
	katRawQuery  = "tag=b&to=alice%40example.com&tag=a&q=hello+world%7E&channel=apns"
	katCanonical = "channel=apns&q=hello%20world~&tag=a&tag=b&to=alice%40example.com"
	katTimestamp = 1700000000
	katNonce     = "k3Jm9xQ2pL7vR4tZ8wYb_A"
	katBody      = `{"to":"user-42","title":"Hello","body":"Hi there"}`
	katBodyHash  = "6c8f16a8f4d19e5d3a4589cf7926384b7064e3e211beaf8ada64f8aac4a63729"
	katString    = "POST\n/v1/apps/app_3f9c/messages\n" + katCanonical + "\n1700000000\nk3Jm9xQ2pL7vR4tZ8wYb_A\n" + katBodyHash
	katSignature = "110040ae0fe0ff86daf8239ac5dd7a2c47ed76b52f532fdc512b9ecd577dc5f8"

	// GET, escaped path segment, empty query, empty body.
	kat2Path      = "/v1/apps/app_3f9c/messages/msg%2F01"
	kat2Timestamp = 1700000123
	kat2Nonce     = "AAAAAAAAAAAAAAAA"
	emptySHA256   = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	kat2Signature = "8308069a978d3a6a3f4a57744d81430e1e0254177f8f9f153c8a6b5a7e6e3771"
)

// fakeClock is a settable clock shared by a Verifier and its MemoryNonces.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// apps is a map-backed signing.Apps that counts lookups.
type apps struct {
	creds   map[string]signing.Credentials
	lookups atomic.Int64
	err     error // returned for every lookup when set
}

func (a *apps) Lookup(_ context.Context, appKey string) (signing.Credentials, error) {
	a.lookups.Add(1)
	if a.err != nil {
		return signing.Credentials{}, a.err
	}
	c, ok := a.creds[appKey]
	if !ok {
		return signing.Credentials{}, fmt.Errorf("app key %q: %w", appKey, signing.ErrUnknownApp)
	}
	return c, nil
}

func testApps() *apps {
	return &apps{creds: map[string]signing.Credentials{
		katAppKey: {AppID: "app-1", Secret: []byte(katSecret)},
		"app_two": {AppID: "app-2", Secret: []byte("second-secret")},
	}}
}

// acceptAll is a NonceStore that never reports a replay.
type acceptAll struct{}

func (acceptAll) Use(context.Context, string, string, time.Time) (bool, error) { return true, nil }

// failingNonces is a NonceStore that is down.
type failingNonces struct{ err error }

func (f failingNonces) Use(context.Context, string, string, time.Time) (bool, error) {
	return false, f.err
}

func newVerifier(t testing.TB, cfg signing.Config) *signing.Verifier {
	t.Helper()
	v, err := signing.NewVerifier(cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

// signedRequest builds a server-side style request for target, signed at
// now with the given app.
func signedRequest(t testing.TB, method, target, appKey string, secret []byte, now time.Time, nonce string, body []byte) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, "http://api.test"+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := signing.SignRequest(r, appKey, secret, now, nonce, body); err != nil {
		t.Fatal(err)
	}
	return r
}
