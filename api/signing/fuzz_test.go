package signing_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pushledger/pushledger/api/signing"
)

// referenceCanonicalQuery is an independent implementation on top of
// net/url: ParseQuery decodes (and rejects ';'), QueryEscape encodes
// everything but the unreserved set, writing spaces as '+'.
func referenceCanonicalQuery(raw string) (string, error) {
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return "", err
	}
	enc := func(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }
	var pairs [][2]string
	for k, vs := range vals {
		for _, v := range vs {
			pairs = append(pairs, [2]string{enc(k), enc(v)})
		}
	}
	slices.SortFunc(pairs, func(a, b [2]string) int {
		if c := strings.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return strings.Compare(a[1], b[1])
	})
	parts := make([]string, len(pairs))
	for i, p := range pairs {
		parts[i] = p[0] + "=" + p[1]
	}
	return strings.Join(parts, "&"), nil
}

func isCanonicalChar(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		strings.IndexByte("-._~%=&", c) >= 0
}

func FuzzCanonicalQuery(f *testing.F) {
	for _, s := range []string{"", "a=1", "b=2&a=1", katRawQuery, "a", "&&", "=", "a=%zz", "a=%", "q=a+b%2B",
		"x=%E2%82%AC&x=€", "a;b=1", "%7F=1&A=2", "a-=1&a=2", "k=a=b&k=", "%41%7e=%7E"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := signing.CanonicalQuery(raw)
		ref, refErr := referenceCanonicalQuery(raw)
		if err != nil {
			if !errors.Is(err, signing.ErrMalformedHeader) {
				t.Fatalf("CanonicalQuery(%q) error %v does not wrap ErrMalformedHeader", raw, err)
			}
			if refErr == nil {
				t.Fatalf("CanonicalQuery(%q) failed (%v) but net/url accepts it", raw, err)
			}
			return
		}
		if refErr == nil && got != ref {
			t.Fatalf("CanonicalQuery(%q) = %q, reference %q", raw, got, ref)
		}
		for i := 0; i < len(got); i++ {
			if !isCanonicalChar(got[i]) {
				t.Fatalf("CanonicalQuery(%q) = %q has byte %q", raw, got, got[i])
			}
		}
		again, err := signing.CanonicalQuery(got)
		if err != nil || again != got {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", raw, got, again, err)
		}
	})
}

// FuzzVerify checks that arbitrary header values, paths, queries and bodies
// never panic or verify without a correct signature, and that any request
// signed with Sign verifies.
func FuzzVerify(f *testing.F) {
	f.Add("POST", katPath, katRawQuery, katAppKey, "1700000000", katNonce, katSignature, []byte(katBody))
	f.Add("GET", kat2Path, "", katAppKey, "1700000123", kat2Nonce, kat2Signature, []byte(nil))
	f.Add("get", "/a b/ü", "a=%zz", "", "01", "short", "zz", []byte("x"))
	f.Add("", "", "&=&", "app key", "-1", strings.Repeat("n", 65), strings.Repeat("A", 64), []byte{0, 1, 2})
	now := time.Unix(katTimestamp, 0)
	clock := func() time.Time { return now }
	f.Fuzz(func(t *testing.T, method, path, rawQuery, appKey, ts, nonce, sig string, body []byte) {
		ctx := context.Background()
		v := newVerifier(t, signing.Config{
			Apps: testApps(), Nonces: signing.NewMemoryNonces(clock), MaxBody: 1 << 20, Now: clock,
		})

		// 1. Arbitrary credentials: no panic, no success without the
		// right signature.
		r := &http.Request{Method: method, URL: &url.URL{Path: path, RawQuery: rawQuery}, Header: http.Header{
			"X-App-Key": {appKey}, "X-Timestamp": {ts}, "X-Nonce": {nonce}, "X-Signature": {sig},
		}}
		if _, err := v.Verify(ctx, r, body); err == nil {
			n, perr := strconv.ParseInt(ts, 10, 64)
			creds, ok := testApps().creds[appKey]
			if perr != nil || !ok {
				t.Fatalf("verified with timestamp %q, app key %q", ts, appKey)
			}
			want := signing.Sign(creds.Secret, method, r.URL.EscapedPath(), rawQuery, n, nonce, body)
			if !strings.EqualFold(sig, want) || want == "" {
				t.Fatalf("verified without a valid signature: %q", sig)
			}
		}

		// 2. The same request properly signed verifies (unless its query
		// cannot be canonicalised).
		r = &http.Request{Method: method, URL: &url.URL{Path: path, RawQuery: rawQuery}, Header: http.Header{}}
		if err := signing.SignRequest(r, katAppKey, []byte(katSecret), now, signing.NewNonce(), body); err != nil {
			if _, qerr := signing.CanonicalQuery(rawQuery); qerr == nil {
				t.Fatalf("SignRequest failed for a valid query: %v", err)
			}
			return
		}
		if _, err := v.Verify(ctx, r, body); err != nil {
			t.Fatalf("signed request does not verify: %v\nmethod %q path %q query %q", err, method, path, rawQuery)
		}
	})
}
