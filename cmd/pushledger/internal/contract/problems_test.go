package contract_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pushledger/pushledger/api"
	"github.com/pushledger/pushledger/api/signing"
)

// problemsAt boots the platform with its clock stopped at now and creates
// one app: the problem details below name the server's time.
func problemsAt(t *testing.T, now time.Time) (*contract, creds) {
	t.Helper()
	in := bootPlatform(t, func() time.Time { return now })
	c := newContract(t, in)
	var a api.CreatedApp
	c.ok(req{method: "POST", path: "/admin/v1/apps", admin: in.AdminToken, body: message{"name": "problems"}}, 201, &a)
	return c, creds{a.AppID, a.AppKey, a.AppSecret}
}

// signAt signs as app at time at with nonce (a new one when empty), then
// applies mut to the signed request.
func signAt(t *testing.T, app creds, at time.Time, nonce string, mut func(*http.Request)) func(*http.Request, []byte) {
	return func(r *http.Request, body []byte) {
		if nonce == "" {
			nonce = signing.NewNonce()
		}
		if err := signing.SignRequest(r, app.key, []byte(app.secret), at, nonce, body); err != nil {
			t.Fatal(err)
		}
		if mut != nil {
			mut(r)
		}
	}
}

// TestStaleTimestampDetail: the stale-timestamp problem's detail is a
// sentence for the client (both times and the window), with no error-chain
// prefix.
func TestStaleTimestampDetail(t *testing.T) {
	now := time.Unix(1700000000, 0)
	c, a := problemsAt(t, now)
	p := c.fails(req{method: "GET", path: "/v1/messages", sign: signAt(t, a, now.Add(-301*time.Second), "", nil)}, 401, api.SlugStaleTimestamp).problem
	const want = "X-Timestamp 1699999699 is 301 s behind the server clock (1700000000); at most 300 s is allowed"
	if p.Detail != want {
		t.Errorf("detail %q\nwant   %q", p.Detail, want)
	}
	p = c.fails(req{method: "GET", path: "/v1/messages", sign: signAt(t, a, now.Add(400*time.Second), "", nil)}, 401, api.SlugStaleTimestamp).problem
	if want := "X-Timestamp 1700000400 is 400 s ahead of the server clock (1700000000); at most 300 s is allowed"; p.Detail != want {
		t.Errorf("detail %q\nwant   %q", p.Detail, want)
	}
}

// TestAuthProblemDetails: no authentication problem leaks the Go error
// chain ("authenticate request: signing: ...") into its detail.
func TestAuthProblemDetails(t *testing.T) {
	now := time.Now()
	c, a := problemsAt(t, now)
	get := func(mut func(r *http.Request)) func(*http.Request, []byte) { return signAt(t, a, now, "", mut) }
	replayed := signing.NewNonce()
	c.ok(req{method: "GET", path: "/v1/messages", sign: signAt(t, a, now, replayed, nil)}, 200, nil)
	tests := []struct {
		name   string
		sign   func(*http.Request, []byte)
		slug   string
		detail string
	}{
		{"missing headers", get(func(r *http.Request) { r.Header.Del(signing.HeaderNonce); r.Header.Del(signing.HeaderSignature) }),
			api.SlugMissingCreds, "the X-Nonce, X-Signature headers are missing or empty"},
		{"missing header", get(func(r *http.Request) { r.Header.Del(signing.HeaderSignature) }),
			api.SlugMissingCreds, "the X-Signature header is missing or empty"},
		{"malformed nonce", get(func(r *http.Request) { r.Header.Set(signing.HeaderNonce, "short") }),
			api.SlugMalformedCreds, "X-Nonce must be 16-64 characters of [A-Za-z0-9_-]"},
		{"malformed signature", get(func(r *http.Request) { r.Header.Set(signing.HeaderSignature, "abcd") }),
			api.SlugMalformedCreds, "X-Signature must be 64 lowercase hex digits"},
		{"malformed query", get(func(r *http.Request) { r.URL.RawQuery = "a=%zz" }),
			api.SlugMalformedCreds, `the query string cannot be canonicalised: invalid %-escape "%zz"`},
		{"unknown app", get(func(r *http.Request) { r.Header.Set(signing.HeaderAppKey, "pk_nobody") }),
			api.SlugUnknownApp, "no app has this app key"},
		{"bad signature", get(func(r *http.Request) { r.Header.Set(signing.HeaderNonce, signing.NewNonce()) }),
			api.SlugBadSignature, "the signature does not match the request"},
		{"upper-case signature", get(func(r *http.Request) {
			r.Header.Set(signing.HeaderSignature, strings.ToUpper(r.Header.Get(signing.HeaderSignature)))
		}), api.SlugBadSignature, "the signature does not match the request"},
		{"replayed nonce", signAt(t, a, now, replayed, nil), api.SlugReplayedNonce, "this nonce was already used within the timestamp window"},
		{"stale timestamp", signAt(t, a, now.Add(-time.Hour), "", nil), api.SlugStaleTimestamp, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := c.with(t).fails(req{method: "GET", path: "/v1/messages", sign: tt.sign, anySpec: true}, 401, tt.slug).problem
			if tt.detail != "" && p.Detail != tt.detail {
				t.Errorf("detail %q\nwant   %q", p.Detail, tt.detail)
			}
			if p.Detail == "" || strings.Contains(p.Detail, "authenticate request") || strings.Contains(p.Detail, "signing:") {
				t.Errorf("detail %q is not a clean sentence", p.Detail)
			}
		})
	}
}

// TestAudienceNamingNoTarget: an audience without any selector (missing,
// {}, only empty lists) is the empty-audience problem, like an audience
// that resolves to no device; two kinds of selector stay invalid-request.
func TestAudienceNamingNoTarget(t *testing.T) {
	c, a := problemsAt(t, time.Now())
	c.ok(req{method: "PUT", path: "/v1/devices/phone-1", app: &a, body: message{"platform": "android"}}, 200, nil)
	const notif = `"notification":{"title":"t","body":"b"}`
	tests := []struct {
		name, body string
		slug       string
		detail     string
	}{
		{"missing", `{` + notif + `}`, api.SlugEmptyAudience, "the audience names no target"},
		{"null", `{"audience":null,` + notif + `}`, api.SlugEmptyAudience, "the audience names no target"},
		{"empty object", `{"audience":{},` + notif + `}`, api.SlugEmptyAudience, "the audience names no target"},
		{"empty aliases", `{"audience":{"aliases":[]},` + notif + `}`, api.SlugEmptyAudience, "the audience names no target"},
		{"empty device ids", `{"audience":{"device_ids":[]},` + notif + `}`, api.SlugEmptyAudience, "the audience names no target"},
		{"only empty lists", `{"audience":{"device_ids":[],"aliases":[],"tags":{"all_of":[],"any_of":[],"none_of":[]},"broadcast":false},` + notif + `}`,
			api.SlugEmptyAudience, "the audience names no target"},
		{"empty tags", `{"audience":{"tags":{}},` + notif + `}`, api.SlugEmptyAudience, "the audience names no target"},
		{"resolves to no device", `{"audience":{"device_ids":["ghost"]},` + notif + `}`, api.SlugEmptyAudience, "audience resolves to no device"},
		{"two kinds", `{"audience":{"device_ids":["phone-1"],"broadcast":true},` + notif + `}`, api.SlugInvalidRequest, ""},
		{"two kinds, one list empty", `{"audience":{"device_ids":["phone-1"],"aliases":[],"tags":{"any_of":["vip"]}},` + notif + `}`, api.SlugInvalidRequest, ""},
		{"tags with only none_of", `{"audience":{"tags":{"none_of":["muted"]}},` + notif + `}`, api.SlugInvalidRequest, ""},
		{"in a batch", `{"messages":[{"audience":{"broadcast":true},` + notif + `},{"audience":{"aliases":[]},` + notif + `}]}`,
			api.SlugEmptyAudience, "the audience names no target"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := c.with(t).fails(req{method: "POST", path: "/v1/messages", app: &a, body: tt.body, anySpec: true}, 422, tt.slug).problem
			if tt.detail != "" && p.Detail != tt.detail {
				t.Errorf("detail %q, want %q", p.Detail, tt.detail)
			}
			if tt.name == "in a batch" && (len(p.Errors) != 1 || p.Errors[0].Pointer != "/messages/1" || p.Errors[0].Detail != tt.detail) {
				t.Errorf("errors %+v, want one at /messages/1", p.Errors)
			}
		})
	}
}
