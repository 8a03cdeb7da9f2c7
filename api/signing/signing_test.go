package signing_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pushledger/pushledger/api/signing"
)

func TestCanonicalQuery(t *testing.T) {
	tests := []struct {
		name, raw, want string
	}{
		{"empty", "", ""},
		{"single", "a=1", "a=1"},
		{"sorted by key", "b=2&a=1", "a=1&b=2"},
		{"repeated key sorted by value", "a=2&a=1&a=10", "a=1&a=10&a=2"},
		{"key only", "a", "a="},
		{"empty value", "a=", "a="},
		{"empty key", "=1", "=1"},
		{"empty parts skipped", "&&a=1&&b=2&", "a=1&b=2"},
		{"only separators", "&&&", ""},
		{"plus is space", "q=hello+world", "q=hello%20world"},
		{"space escape kept", "q=hello%20world", "q=hello%20world"},
		{"escaped plus", "q=a%2bb", "q=a%2Bb"},
		{"unreserved escapes decoded", "q=%7e%41%2D%2e%5F", "q=~A-._"},
		{"lower-case hex upper-cased", "q=%2f%3a", "q=%2F%3A"},
		{"second equals is data", "k=a=b", "k=a%3Db"},
		{"reserved characters escaped", "k=!*'();:@$,/?[]", "k=%21%2A%27%28%29%3B%3A%40%24%2C%2F%3F%5B%5D"},
		{"encoded key", "a%20b=c", "a%20b=c"},
		{"utf-8 escaped", "x=%E2%82%AC", "x=%E2%82%AC"},
		{"raw utf-8", "x=€", "x=%E2%82%AC"},
		{"invalid utf-8 bytes kept", "x=%FF%FE", "x=%FF%FE"},
		{"semicolon is data", "a;b=1", "a%3Bb=1"},
		{"sort by key before value", "a-=1&a=2", "a=2&a-=1"},
		{"sort on encoded form", "A=2&%7F=1", "%7F=1&A=2"},
		{"sort is byte order", "b=1&B=1&_=1&~=1&0=1", "0=1&B=1&_=1&b=1&~=1"},
		{"kat", katRawQuery, katCanonical},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := signing.CanonicalQuery(tt.raw)
			if err != nil {
				t.Fatalf("CanonicalQuery(%q) error: %v", tt.raw, err)
			}
			if got != tt.want {
				t.Fatalf("CanonicalQuery(%q) = %q, want %q", tt.raw, got, tt.want)
			}
		})
	}
}

func TestCanonicalQueryErrors(t *testing.T) {
	for _, raw := range []string{"a=%", "a=%2", "a=%zz", "%g0=1", "a=1&b=%4", "ok=1&%=x"} {
		t.Run(raw, func(t *testing.T) {
			_, err := signing.CanonicalQuery(raw)
			if !errors.Is(err, signing.ErrMalformedHeader) {
				t.Fatalf("CanonicalQuery(%q) error = %v, want ErrMalformedHeader", raw, err)
			}
			var me *signing.MalformedError
			if !errors.As(err, &me) || me.Field != "query" {
				t.Fatalf("error %v is not a *MalformedError for the query", err)
			}
		})
	}
}

func TestStringToSign(t *testing.T) {
	tests := []struct {
		name                string
		method, path, query string
		ts                  int64
		nonce, bodyHash     string
		want                string
	}{
		{
			name: "known answer", method: katMethod, path: katPath, query: katRawQuery,
			ts: katTimestamp, nonce: katNonce, bodyHash: katBodyHash, want: katString,
		},
		{
			name: "empty query and body, escaped path", method: "GET", path: kat2Path, query: "",
			ts: kat2Timestamp, nonce: kat2Nonce, bodyHash: emptySHA256,
			want: "GET\n/v1/apps/app_3f9c/messages/msg%2F01\n\n1700000123\nAAAAAAAAAAAAAAAA\n" + emptySHA256,
		},
		{
			name: "method upper-cased, zero timestamp", method: "delete", path: "/", query: "b&a",
			ts: 0, nonce: "n", bodyHash: "h",
			want: "DELETE\n/\na=&b=\n0\nn\nh",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := signing.StringToSign(tt.method, tt.path, tt.query, tt.ts, tt.nonce, tt.bodyHash)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("StringToSign =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
	if _, err := signing.StringToSign("GET", "/", "a=%zz", 0, "n", "h"); !errors.Is(err, signing.ErrMalformedHeader) {
		t.Fatalf("StringToSign with a bad query: err = %v, want ErrMalformedHeader", err)
	}
}

func TestBodySHA256Hex(t *testing.T) {
	if got := signing.BodySHA256Hex(nil); got != emptySHA256 {
		t.Errorf("empty body hash = %s", got)
	}
	if got := signing.BodySHA256Hex([]byte(katBody)); got != katBodyHash {
		t.Errorf("kat body hash = %s", got)
	}
}

func TestSignKnownAnswer(t *testing.T) {
	got := signing.Sign([]byte(katSecret), katMethod, katPath, katRawQuery, katTimestamp, katNonce, []byte(katBody))
	if got != katSignature {
		t.Errorf("Sign (kat 1) = %s, want %s", got, katSignature)
	}
	got = signing.Sign([]byte(katSecret), "GET", kat2Path, "", kat2Timestamp, kat2Nonce, nil)
	if got != kat2Signature {
		t.Errorf("Sign (kat 2) = %s, want %s", got, kat2Signature)
	}
	if got := signing.Sign([]byte(katSecret), "GET", "/", "a=%zz", 1, kat2Nonce, nil); got != "" {
		t.Errorf("Sign with an invalid query = %q, want empty", got)
	}
}

func TestSignRequest(t *testing.T) {
	r, err := http.NewRequest("post", "http://api.test"+katPath+"?"+katRawQuery, strings.NewReader(katBody))
	if err != nil {
		t.Fatal(err)
	}
	if err := signing.SignRequest(r, katAppKey, []byte(katSecret), time.Unix(katTimestamp, 999_000_000), katNonce, []byte(katBody)); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"X-App-Key":   katAppKey,
		"X-Timestamp": "1700000000",
		"X-Nonce":     katNonce,
		"X-Signature": katSignature,
	}
	for k, v := range want {
		if got := r.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}

	bad, _ := http.NewRequest("GET", "http://api.test/x?a=%zz", nil)
	if err := signing.SignRequest(bad, katAppKey, []byte(katSecret), time.Now(), katNonce, nil); !errors.Is(err, signing.ErrMalformedHeader) {
		t.Fatalf("SignRequest with a bad query: err = %v", err)
	}
	if len(bad.Header) != 0 {
		t.Fatalf("SignRequest set headers on failure: %v", bad.Header)
	}
}

func TestNewNonce(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9_-]{22}$`)
	seen := map[string]bool{}
	for range 100 {
		n := signing.NewNonce()
		if !re.MatchString(n) {
			t.Fatalf("NewNonce() = %q, not 22 base64url characters", n)
		}
		if seen[n] {
			t.Fatalf("NewNonce repeated %q", n)
		}
		seen[n] = true
	}
}

func TestNewVerifierConfig(t *testing.T) {
	_, err := signing.NewVerifier(signing.Config{Window: -time.Second, MaxBody: -1})
	if err == nil {
		t.Fatal("NewVerifier accepted an invalid config")
	}
	for _, want := range []string{"Apps", "Nonces", "Window", "MaxBody"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not report %s", err, want)
		}
	}
	if _, err := signing.NewVerifier(signing.Config{Apps: testApps(), Nonces: acceptAll{}, Window: time.Millisecond}); err == nil {
		t.Error("NewVerifier accepted a sub-second window")
	}
	if _, err := signing.NewVerifier(signing.Config{Apps: testApps(), Nonces: acceptAll{}}); err != nil {
		t.Errorf("NewVerifier with defaults: %v", err)
	}
}

func TestCredentialsNeverPrintSecret(t *testing.T) {
	c := signing.Credentials{AppID: "app-1", Secret: []byte("top-secret-value")}
	var logs strings.Builder
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("auth", "creds", c)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("auth", "creds", c)
	for _, s := range []string{
		fmt.Sprint(c), fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%s", c),
		logs.String(),
	} {
		if strings.Contains(s, "top-secret-value") || strings.Contains(s, fmt.Sprint([]byte("top-secret-value"))) {
			t.Errorf("secret leaked: %s", s)
		}
		if !strings.Contains(s, "app-1") {
			t.Errorf("app id missing: %s", s)
		}
	}
}

// verifyFixture is a Verifier over the test apps with a fake clock at the
// kat timestamp and an in-memory nonce store.
type verifyFixture struct {
	v      *signing.Verifier
	apps   *apps
	clock  *fakeClock
	nonces *signing.MemoryNonces
}

func newVerifyFixture(t testing.TB) *verifyFixture {
	f := &verifyFixture{apps: testApps(), clock: newFakeClock(time.Unix(katTimestamp, 0))}
	f.nonces = signing.NewMemoryNonces(f.clock.Now)
	f.v = newVerifier(t, signing.Config{Apps: f.apps, Nonces: f.nonces, MaxBody: 4096, Now: f.clock.Now})
	return f
}

// katRequest is the known-answer request with X-Signature sig.
func katRequest(t *testing.T, sig string) *http.Request {
	t.Helper()
	r, err := http.NewRequest("POST", "http://api.test"+katPath+"?"+katRawQuery, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("X-App-Key", katAppKey)
	r.Header.Set("X-Timestamp", "1700000000")
	r.Header.Set("X-Nonce", katNonce)
	r.Header.Set("X-Signature", sig)
	return r
}

func TestVerifyKnownAnswer(t *testing.T) {
	f := newVerifyFixture(t)
	creds, err := f.v.Verify(context.Background(), katRequest(t, katSignature), []byte(katBody))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if creds.AppID != "app-1" || string(creds.Secret) != katSecret {
		t.Fatalf("Verify returned %v", creds)
	}
}

func TestVerifyRejections(t *testing.T) {
	now := time.Unix(katTimestamp, 0)
	secret := []byte(katSecret)
	body := []byte(`{"x":1}`)
	sign := func(mut func(r *http.Request)) *http.Request {
		r := signedRequest(t, "POST", "/v1/messages?a=1", katAppKey, secret, now, signing.NewNonce(), body)
		if mut != nil {
			mut(r)
		}
		return r
	}
	set := func(k, v string) func(*http.Request) { return func(r *http.Request) { r.Header[k] = []string{v} } }
	tests := []struct {
		name   string
		req    *http.Request
		body   []byte
		want   error
		detail func(t *testing.T, err error)
	}{
		{name: "ok", req: sign(nil), want: nil},
		{name: "body too large", req: sign(nil), body: make([]byte, 4097), want: signing.ErrBodyTooLarge},
		{
			name: "all headers missing", req: sign(func(r *http.Request) { r.Header = http.Header{} }), want: signing.ErrMissingHeaders,
			detail: func(t *testing.T, err error) {
				var me *signing.MissingHeadersError
				if !errors.As(err, &me) || strings.Join(me.Headers, ",") != "X-App-Key,X-Timestamp,X-Nonce,X-Signature" {
					t.Errorf("missing headers detail: %v", err)
				}
			},
		},
		{name: "empty signature is missing", req: sign(set("X-Signature", "")), want: signing.ErrMissingHeaders},
		{name: "repeated nonce header", req: sign(func(r *http.Request) { r.Header.Add("X-Nonce", "bbbbbbbbbbbbbbbb") }), want: signing.ErrMalformedHeader},
		{name: "timestamp not decimal", req: sign(set("X-Timestamp", "17e8")), want: signing.ErrMalformedHeader},
		{name: "timestamp leading zero", req: sign(set("X-Timestamp", "01700000000")), want: signing.ErrMalformedHeader},
		{name: "timestamp signed", req: sign(set("X-Timestamp", "+1700000000")), want: signing.ErrMalformedHeader},
		{name: "timestamp negative", req: sign(set("X-Timestamp", "-1")), want: signing.ErrMalformedHeader},
		{name: "timestamp fractional", req: sign(set("X-Timestamp", "1700000000.5")), want: signing.ErrMalformedHeader},
		{name: "timestamp too long", req: sign(set("X-Timestamp", "9999999999999999999")), want: signing.ErrMalformedHeader},
		{name: "nonce short", req: sign(set("X-Nonce", "abcdefghijklmno")), want: signing.ErrMalformedHeader},
		{name: "nonce long", req: sign(set("X-Nonce", strings.Repeat("a", 65))), want: signing.ErrMalformedHeader},
		{name: "nonce bad char", req: sign(set("X-Nonce", "abcdefghijklmno=")), want: signing.ErrMalformedHeader},
		{name: "signature short", req: sign(set("X-Signature", "abcd")), want: signing.ErrMalformedHeader},
		{name: "signature not hex", req: sign(set("X-Signature", strings.Repeat("g", 64))), want: signing.ErrMalformedHeader},
		// The scheme's encoding is lowercase hex: the right MAC spelt in
		// upper or mixed case is not a valid signature.
		{name: "signature upper case", req: sign(func(r *http.Request) {
			r.Header.Set("X-Signature", strings.ToUpper(r.Header.Get("X-Signature")))
		}), want: signing.ErrBadSignature},
		{name: "signature mixed case", req: sign(func(r *http.Request) {
			sig := []byte(r.Header.Get("X-Signature"))
			for i, c := range sig {
				if 'a' <= c && c <= 'f' {
					sig[i] = c - 'a' + 'A' // one digit is enough
					break
				}
			}
			r.Header.Set("X-Signature", string(sig))
		}), want: signing.ErrBadSignature},
		{name: "app key with space", req: sign(set("X-App-Key", "app 1")), want: signing.ErrMalformedHeader},
		{name: "app key too long", req: sign(set("X-App-Key", strings.Repeat("k", 257))), want: signing.ErrMalformedHeader},
		{name: "query not decodable", req: sign(func(r *http.Request) { r.URL.RawQuery = "a=%zz" }), want: signing.ErrMalformedHeader},
		{
			name: "timestamp too old", req: signedRequest(t, "POST", "/v1/messages", katAppKey, secret, now.Add(-301*time.Second), signing.NewNonce(), body),
			want: signing.ErrStaleTimestamp,
			detail: func(t *testing.T, err error) {
				var se *signing.StaleTimestampError
				if !errors.As(err, &se) || se.Timestamp != katTimestamp-301 || se.Now != katTimestamp || se.Window != 300*time.Second {
					t.Errorf("stale detail: %#v", se)
				}
			},
		},
		{name: "timestamp too new", req: signedRequest(t, "POST", "/v1/messages", katAppKey, secret, now.Add(301*time.Second), signing.NewNonce(), body), want: signing.ErrStaleTimestamp},
		{name: "timestamp at past edge", req: signedRequest(t, "POST", "/v1/messages", katAppKey, secret, now.Add(-300*time.Second), signing.NewNonce(), body)},
		{name: "timestamp at future edge", req: signedRequest(t, "POST", "/v1/messages", katAppKey, secret, now.Add(300*time.Second), signing.NewNonce(), body)},
		{name: "unknown app", req: signedRequest(t, "POST", "/v1/messages", "app_nope", secret, now, signing.NewNonce(), body), want: signing.ErrUnknownApp},
		{name: "wrong secret", req: signedRequest(t, "POST", "/v1/messages", katAppKey, []byte("guess"), now, signing.NewNonce(), body), want: signing.ErrBadSignature},
		{name: "body changed", req: sign(nil), body: []byte(`{"x":2}`), want: signing.ErrBadSignature},
		{name: "query changed", req: sign(func(r *http.Request) { r.URL.RawQuery = "a=2" }), want: signing.ErrBadSignature},
		{name: "path changed", req: sign(func(r *http.Request) { r.URL.Path = "/v1/messagez" }), want: signing.ErrBadSignature},
		{name: "method changed", req: sign(func(r *http.Request) { r.Method = "PUT" }), want: signing.ErrBadSignature},
		{name: "timestamp changed", req: sign(set("X-Timestamp", strconv.FormatInt(katTimestamp-1, 10))), want: signing.ErrBadSignature},
		{name: "nonce changed", req: sign(set("X-Nonce", "zzzzzzzzzzzzzzzzzzzzzz")), want: signing.ErrBadSignature},
		{
			name: "signature of another app", req: sign(set("X-App-Key", "app_two")), want: signing.ErrBadSignature,
			detail: func(t *testing.T, err error) {
				var se *signing.SignatureError
				if !errors.As(err, &se) || !strings.HasPrefix(se.StringToSign, "POST\n/v1/messages\na=1\n1700000000\n") {
					t.Errorf("signature detail: %#v", se)
				}
				if strings.Contains(err.Error(), "second-secret") {
					t.Errorf("error leaks the secret: %v", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newVerifyFixture(t)
			b := body
			if tt.body != nil {
				b = tt.body
			}
			_, err := f.v.Verify(context.Background(), tt.req, b)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
			for _, other := range []error{signing.ErrMissingHeaders, signing.ErrMalformedHeader, signing.ErrUnknownApp,
				signing.ErrStaleTimestamp, signing.ErrReplayedNonce, signing.ErrBadSignature, signing.ErrBodyTooLarge} {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("error %v also matches %v", err, other)
				}
			}
			if tt.detail != nil {
				tt.detail(t, err)
			}
			if f.nonces.Len() != 0 {
				t.Errorf("rejected request recorded a nonce")
			}
		})
	}
}

// TestVerifyRejectsUpperCaseSignature: X-Signature is lowercase hex, so the
// known-answer signature in upper case is refused as a bad signature (and
// does not use up the nonce), while the lowercase one is accepted.
func TestVerifyRejectsUpperCaseSignature(t *testing.T) {
	f := newVerifyFixture(t)
	req := func(sig string) *http.Request { return katRequest(t, sig) }
	_, err := f.v.Verify(context.Background(), req(strings.ToUpper(katSignature)), []byte(katBody))
	if !errors.Is(err, signing.ErrBadSignature) || errors.Is(err, signing.ErrMalformedHeader) {
		t.Fatalf("upper-case signature: err = %v, want %v", err, signing.ErrBadSignature)
	}
	if f.nonces.Len() != 0 {
		t.Fatalf("rejected request recorded a nonce")
	}
	if _, err := f.v.Verify(context.Background(), req(katSignature), []byte(katBody)); err != nil {
		t.Fatalf("lowercase signature: %v", err)
	}
}

func TestVerifyOrder(t *testing.T) {
	t.Run("stale requests do not reach the app store", func(t *testing.T) {
		f := newVerifyFixture(t)
		r := signedRequest(t, "GET", "/x", "app_nope", []byte("x"), time.Unix(katTimestamp-1000, 0), signing.NewNonce(), nil)
		if _, err := f.v.Verify(context.Background(), r, nil); !errors.Is(err, signing.ErrStaleTimestamp) {
			t.Fatalf("err = %v", err)
		}
		if n := f.apps.lookups.Load(); n != 0 {
			t.Fatalf("%d lookups", n)
		}
	})
	t.Run("bad signature does not burn the nonce", func(t *testing.T) {
		f := newVerifyFixture(t)
		now := f.clock.Now()
		nonce := signing.NewNonce()
		forged := signedRequest(t, "GET", "/x", katAppKey, []byte("wrong"), now, nonce, nil)
		if _, err := f.v.Verify(context.Background(), forged, nil); !errors.Is(err, signing.ErrBadSignature) {
			t.Fatalf("forged: err = %v", err)
		}
		good := signedRequest(t, "GET", "/x", katAppKey, []byte(katSecret), now, nonce, nil)
		if _, err := f.v.Verify(context.Background(), good, nil); err != nil {
			t.Fatalf("genuine request after forged one: %v", err)
		}
	})
	t.Run("app store failure is not unknown app", func(t *testing.T) {
		f := newVerifyFixture(t)
		down := errors.New("db down")
		f.apps.err = down
		r := signedRequest(t, "GET", "/x", katAppKey, []byte(katSecret), f.clock.Now(), signing.NewNonce(), nil)
		_, err := f.v.Verify(context.Background(), r, nil)
		if !errors.Is(err, down) || errors.Is(err, signing.ErrUnknownApp) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("empty secret is refused", func(t *testing.T) {
		f := newVerifyFixture(t)
		f.apps.creds["app_empty"] = signing.Credentials{AppID: "app-e"}
		r := signedRequest(t, "GET", "/x", "app_empty", nil, f.clock.Now(), signing.NewNonce(), nil)
		if _, err := f.v.Verify(context.Background(), r, nil); err == nil {
			t.Fatal("accepted a request for an app with an empty secret")
		}
	})
	t.Run("nonce store failure", func(t *testing.T) {
		down := errors.New("redis down")
		v := newVerifier(t, signing.Config{Apps: testApps(), Nonces: failingNonces{down}, Now: func() time.Time { return time.Unix(katTimestamp, 0) }})
		r := signedRequest(t, "GET", "/x", katAppKey, []byte(katSecret), time.Unix(katTimestamp, 0), signing.NewNonce(), nil)
		_, err := v.Verify(context.Background(), r, nil)
		if !errors.Is(err, down) || errors.Is(err, signing.ErrReplayedNonce) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestVerifyNonceReplay(t *testing.T) {
	f := newVerifyFixture(t)
	ctx := context.Background()
	nonce := signing.NewNonce()
	send := func(appKey, secret string) error {
		r := signedRequest(t, "GET", "/x", appKey, []byte(secret), f.clock.Now(), nonce, nil)
		_, err := f.v.Verify(ctx, r, nil)
		return err
	}
	if err := send(katAppKey, katSecret); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if err := send(katAppKey, katSecret); !errors.Is(err, signing.ErrReplayedNonce) {
		t.Fatalf("replay: err = %v, want ErrReplayedNonce", err)
	}
	if err := send("app_two", "second-secret"); err != nil {
		t.Fatalf("same nonce, other app: %v", err)
	}

	// Replaying the very same request: rejected for as long as its
	// timestamp is accepted, then stale.
	r := signedRequest(t, "GET", "/y", katAppKey, []byte(katSecret), f.clock.Now(), nonce+"x", nil)
	if _, err := f.v.Verify(ctx, r, nil); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(300 * time.Second)
	if _, err := f.v.Verify(ctx, r.Clone(ctx), nil); !errors.Is(err, signing.ErrReplayedNonce) {
		t.Fatalf("replay at the window edge: err = %v", err)
	}
	f.clock.Advance(time.Nanosecond)
	if _, err := f.v.Verify(ctx, r.Clone(ctx), nil); !errors.Is(err, signing.ErrStaleTimestamp) {
		t.Fatalf("replay after the window: err = %v", err)
	}
}
