package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pushledger/pushledger/adapters/channels"
	"github.com/pushledger/pushledger/adapters/channels/channeltest"
	"github.com/pushledger/pushledger/adapters/channels/webhook"
)

var secret = []byte("s3cret-for-tests")

// fakeReceiver is a webhook receiver on a real local HTTP server. It answers
// 401 to a request whose signature does not verify, so that every test also
// checks signing.
type fakeReceiver struct {
	*httptest.Server
	outcome  atomic.Int32 // a channeltest.Outcome
	requests atomic.Int64
}

func newFakeReceiver(t *testing.T) *fakeReceiver {
	t.Helper()
	f := &fakeReceiver{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := f.requests.Add(1)
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !webhook.VerifySignature(secret, r.Header.Get(webhook.HeaderTimestamp), body, r.Header.Get(webhook.HeaderSignature)) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		switch channeltest.Outcome(f.outcome.Load()) {
		case channeltest.Accept:
			w.Header().Set(webhook.HeaderRequestID, "req-"+strconv.FormatInt(n, 10))
			w.WriteHeader(http.StatusOK)
		case channeltest.FailTransient:
			http.Error(w, "busy", http.StatusServiceUnavailable)
		default:
			http.Error(w, "no such app", http.StatusBadRequest)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

func newWebhook(t *testing.T, cfg webhook.Config) *webhook.Webhook {
	t.Helper()
	w, err := webhook.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return w
}

func pushTo(u string) channels.Push {
	return channels.Push{
		MessageID: "2f6d1c8e-5b3a-4e7f-9c21-8a4b6d0e3f17",
		AppID:     "app_7Hq2",
		Attempt:   1,
		Targets: []channels.Target{
			{DeviceID: "dev_a1", Token: "apns-token-a1", Platform: "ios"},
			{DeviceID: "dev_b2", Token: "fcm-token-b2", Platform: "android"},
		},
		Title:    "Order shipped",
		Body:     "Your order #1042 is on its way.",
		Data:     json.RawMessage(`{"order_id":"1042"}`),
		Priority: channels.PriorityHigh,
		Settings: map[string]string{webhook.SettingURL: u},
		Secret:   secret,
	}
}

func TestConformance(t *testing.T) {
	channeltest.Run(t, func(t *testing.T) channeltest.Harness {
		f := newFakeReceiver(t)
		return channeltest.Harness{
			Channel:  newWebhook(t, webhook.Config{}),
			Push:     pushTo(f.URL + "/hook"),
			Respond:  func(o channeltest.Outcome) { f.outcome.Store(int32(o)) },
			Requests: func() int { return int(f.requests.Load()) },
		}
	}, channeltest.Features{TokenInvalid: false})
}

type captured struct {
	method, path, query string
	header              http.Header
	body                []byte
}

// captureServer records every request and answers with status and headers.
func captureServer(t *testing.T, status int, header http.Header) (*httptest.Server, <-chan captured) {
	t.Helper()
	reqs := make(chan captured, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		reqs <- captured{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body}
		for k, v := range header {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv, reqs
}

func TestSendRequest(t *testing.T) {
	srv, reqs := captureServer(t, http.StatusAccepted, http.Header{"X-Request-Id": {"req-123"}})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := newWebhook(t, webhook.Config{Now: func() time.Time { return now }})
	p := pushTo(srv.URL + "/hooks/push?tenant=7")
	p.Attempt = 3
	p.CollapseID = "order-1042"
	p.ExpiresAt = now.Add(time.Hour).In(time.FixedZone("CET", 3600))
	p.Audience = json.RawMessage(`{"segment":"buyers"}`)

	res, err := w.Send(context.Background(), p)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if want := (channels.Result{ProviderMessageID: "req-123", Accepted: 2}); res != want {
		t.Errorf("Result = %+v, want %+v", res, want)
	}

	r := <-reqs
	if r.method != http.MethodPost || r.path != "/hooks/push" || r.query != "tenant=7" {
		t.Errorf("request %s %s?%s, want POST /hooks/push?tenant=7", r.method, r.path, r.query)
	}
	for name, want := range map[string]string{
		"Content-Type":            "application/json",
		"User-Agent":              "pushledger-webhook/1",
		"X-Pushledger-Message-Id": p.MessageID,
		"X-Pushledger-Attempt":    "3",
		"X-Pushledger-Timestamp":  "1767225600",
	} {
		if got := r.header.Get(name); got != want {
			t.Errorf("header %s = %q, want %q", name, got, want)
		}
	}
	sig := r.header.Get("X-Pushledger-Signature")
	if !webhook.VerifySignature(secret, "1767225600", r.body, sig) {
		t.Errorf("signature %q does not verify", sig)
	}
	if webhook.VerifySignature([]byte("another secret"), "1767225600", r.body, sig) {
		t.Error("signature verifies under another secret")
	}
	if webhook.VerifySignature(secret, "1767225601", r.body, sig) {
		t.Error("signature verifies with another timestamp")
	}

	var got map[string]any
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, r.body)
	}
	want := map[string]any{
		"message_id":  p.MessageID,
		"app_id":      "app_7Hq2",
		"attempt":     3.0,
		"title":       "Order shipped",
		"body":        "Your order #1042 is on its way.",
		"data":        map[string]any{"order_id": "1042"},
		"priority":    "high",
		"collapse_id": "order-1042",
		"expires_at":  "2026-01-01T01:00:00Z",
		"targets": []any{
			map[string]any{"device_id": "dev_a1", "platform": "ios"},
			map[string]any{"device_id": "dev_b2", "platform": "android"},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("body:\n got %v\nwant %v", got, want)
	}
	for _, leak := range []string{string(secret), "apns-token-a1", "fcm-token-b2", "segment"} {
		if bytes.Contains(r.body, []byte(leak)) || strings.Contains(strings.Join(flatten(r.header), " "), leak) {
			t.Errorf("request carries %q", leak)
		}
	}
}

func flatten(h http.Header) []string {
	var s []string
	for k, vs := range h {
		s = append(s, k)
		s = append(s, vs...)
	}
	return s
}

func TestSendDefaults(t *testing.T) {
	srv, reqs := captureServer(t, http.StatusNoContent, nil)
	w := newWebhook(t, webhook.Config{UserAgent: "acme-relay/2"})
	p := channels.Push{
		MessageID: "m-1",
		AppID:     "app",
		Attempt:   1,
		Settings:  map[string]string{"url": srv.URL},
		Secret:    secret,
	}
	res, err := w.Send(context.Background(), p)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if want := (channels.Result{Accepted: 1}); res != want {
		t.Errorf("Result = %+v, want %+v", res, want)
	}
	r := <-reqs
	if ua := r.header.Get("User-Agent"); ua != "acme-relay/2" {
		t.Errorf("User-Agent %q", ua)
	}
	const want = `{"message_id":"m-1","app_id":"app","attempt":1,"title":"","body":"","data":null,"priority":"normal","collapse_id":"","expires_at":null,"targets":[]}`
	if string(r.body) != want {
		t.Errorf("body\n got %s\nwant %s", r.body, want)
	}
}

// TestDocumentedExample pins the example in docs/webhook.md, whose signature
// was computed with openssl:
//
//	printf '%s' "1767225600.$BODY" | openssl dgst -sha256 -hmac 's3cret-for-docs'
func TestDocumentedExample(t *testing.T) {
	const (
		docBody = `{"message_id":"2f6d1c8e-5b3a-4e7f-9c21-8a4b6d0e3f17","app_id":"app_7Hq2","attempt":1,"title":"Order shipped","body":"Your order #1042 is on its way.","data":{"order_id":"1042"},"priority":"high","collapse_id":"order-1042","expires_at":"2026-01-01T01:00:00Z","targets":[{"device_id":"dev_a1","platform":"ios"},{"device_id":"dev_b2","platform":"android"}]}`
		docSig  = "v1=09d3de1b4dbfbd1ee108d1680c5d519c6a54a195cc89feeb20052e3ed61f6931"
	)
	docSecret := []byte("s3cret-for-docs")
	if got := webhook.Sign(docSecret, "1767225600", []byte(docBody)); got != docSig {
		t.Fatalf("Sign = %s, want %s", got, docSig)
	}

	srv, reqs := captureServer(t, http.StatusOK, nil)
	now := time.Unix(1767225600, 0)
	w := newWebhook(t, webhook.Config{Now: func() time.Time { return now }})
	p := pushTo(srv.URL)
	p.CollapseID = "order-1042"
	p.ExpiresAt = now.Add(time.Hour)
	p.Secret = docSecret
	if _, err := w.Send(context.Background(), p); err != nil {
		t.Fatalf("Send: %v", err)
	}
	r := <-reqs
	if string(r.body) != docBody {
		t.Errorf("body\n got %s\nwant %s", r.body, docBody)
	}
	if got := r.header.Get(webhook.HeaderSignature); got != docSig {
		t.Errorf("signature %s, want %s", got, docSig)
	}
}

func TestResponseClassification(t *testing.T) {
	var status atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/hook", func(w http.ResponseWriter, r *http.Request) {
		if code := int(status.Load()); code >= 300 && code < 400 {
			w.Header().Set("Location", "/elsewhere")
		}
		w.Header().Set("X-Request-Id", "r-1")
		http.Error(w, "receiver says no", int(status.Load()))
	})
	var redirected atomic.Bool
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) { redirected.Store(true) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	w := newWebhook(t, webhook.Config{})

	for _, code := range []int{200, 201, 202, 204} {
		status.Store(int32(code))
		res, err := w.Send(context.Background(), pushTo(srv.URL+"/hook"))
		if err != nil || res.Accepted != 2 || res.ProviderMessageID != "r-1" {
			t.Errorf("%d: Send = %+v, %v; want success", code, res, err)
		}
	}

	tests := []struct {
		code  int
		class channels.Class
	}{
		{408, channels.Transient},
		{425, channels.Transient},
		{429, channels.Transient},
		{500, channels.Transient},
		{502, channels.Transient},
		{503, channels.Transient},
		{504, channels.Transient},
		{301, channels.Permanent},
		{302, channels.Permanent},
		{307, channels.Permanent},
		{400, channels.Permanent},
		{401, channels.Permanent},
		{403, channels.Permanent},
		{404, channels.Permanent},
		{409, channels.Permanent},
		{410, channels.Permanent},
		{413, channels.Permanent},
		{422, channels.Permanent},
	}
	for _, tc := range tests {
		status.Store(int32(tc.code))
		_, err := w.Send(context.Background(), pushTo(srv.URL+"/hook"))
		class, se := channels.Classify(err)
		if se == nil {
			t.Errorf("%d: error %v is not a SendError", tc.code, err)
			continue
		}
		reason := "http_" + strconv.Itoa(tc.code)
		if class != tc.class || se.Status != tc.code || se.Reason != reason {
			t.Errorf("%d: class %v status %d reason %q, want %v %d %q", tc.code, class, se.Status, se.Reason, tc.class, tc.code, reason)
		}
		if !strings.Contains(err.Error(), "receiver says no") {
			t.Errorf("%d: error %q lacks the response body", tc.code, err)
		}
	}
	if redirected.Load() {
		t.Error("the default client followed a redirect")
	}
}

func TestRetryAfter(t *testing.T) {
	var retryAfter atomic.Value
	var status atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", retryAfter.Load().(string))
		w.WriteHeader(int(status.Load()))
	}))
	t.Cleanup(srv.Close)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	w := newWebhook(t, webhook.Config{Now: func() time.Time { return now }})

	tests := []struct {
		status int
		header string
		want   time.Duration
	}{
		{503, "120", 2 * time.Minute},
		{429, "0", 0},
		{429, now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{503, "Sun, 01 Mar 2026 12:05:00 GMT", 5 * time.Minute},
		{503, now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{503, "soon", 0},
		{400, "120", 0}, // permanent: no retry, so no delay
	}
	for _, tc := range tests {
		retryAfter.Store(tc.header)
		status.Store(int32(tc.status))
		_, err := w.Send(context.Background(), pushTo(srv.URL))
		_, se := channels.Classify(err)
		if se == nil {
			t.Fatalf("Retry-After %q: error %v is not a SendError", tc.header, err)
		}
		if se.RetryAfter != tc.want {
			t.Errorf("%d with Retry-After %q: RetryAfter %v, want %v", tc.status, tc.header, se.RetryAfter, tc.want)
		}
	}
}

// blockingServer holds every request until the test ends or the client goes
// away; arrived receives a value as each request comes in.
func blockingServer(t *testing.T) (srv *httptest.Server, arrived <-chan struct{}) {
	t.Helper()
	release := make(chan struct{})
	in := make(chan struct{}, 16)
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	return srv, in
}

func checkSendError(t *testing.T, err error, class channels.Class, reason string, cause error) {
	t.Helper()
	got, se := channels.Classify(err)
	if se == nil {
		t.Fatalf("error %v is not a SendError", err)
	}
	if got != class || se.Reason != reason {
		t.Errorf("class %v reason %q, want %v %q (error: %v)", got, se.Reason, class, reason, err)
	}
	if cause != nil && !errors.Is(err, cause) {
		t.Errorf("error %v does not wrap %v", err, cause)
	}
}

func TestTimeout(t *testing.T) {
	srv, _ := blockingServer(t)
	w := newWebhook(t, webhook.Config{Timeout: 50 * time.Millisecond})
	_, err := w.Send(context.Background(), pushTo(srv.URL))
	checkSendError(t, err, channels.Transient, channels.ReasonTimeout, context.DeadlineExceeded)
}

func TestCallerDeadline(t *testing.T) {
	srv, _ := blockingServer(t)
	w := newWebhook(t, webhook.Config{Timeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := w.Send(ctx, pushTo(srv.URL))
	checkSendError(t, err, channels.Transient, channels.ReasonTimeout, context.DeadlineExceeded)
}

func TestCallerCancelsInFlight(t *testing.T) {
	srv, arrived := blockingServer(t)
	w := newWebhook(t, webhook.Config{Timeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-arrived
		cancel()
	}()
	_, err := w.Send(ctx, pushTo(srv.URL))
	checkSendError(t, err, channels.Transient, channels.ReasonCanceled, context.Canceled)
}

func TestConnectionRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close()
	w := newWebhook(t, webhook.Config{})

	p := pushTo(strings.Replace(u, "http://", "http://user:hunter2@", 1) + "/hook?token=sekrit")
	_, err := w.Send(context.Background(), p)
	checkSendError(t, err, channels.Transient, channels.ReasonTransport, syscall.ECONNREFUSED)
	var ue *url.Error
	if !errors.As(err, &ue) {
		t.Errorf("error %v does not keep the *url.Error", err)
	}
	for _, secret := range []string{"hunter2", "sekrit"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q reveals %q from the URL", err, secret)
		}
	}
}

func TestInvalidPush(t *testing.T) {
	f := newFakeReceiver(t)
	w := newWebhook(t, webhook.Config{})
	tests := []struct {
		name   string
		modify func(*channels.Push)
		reason string
	}{
		{"no settings", func(p *channels.Push) { p.Settings = nil }, webhook.ReasonMissingURL},
		{"empty url", func(p *channels.Push) { p.Settings = map[string]string{"url": ""} }, webhook.ReasonMissingURL},
		{"unparsable url", func(p *channels.Push) { p.Settings = map[string]string{"url": "http://[::1%zz/x?k=sekrit"} }, webhook.ReasonMissingURL},
		{"relative url", func(p *channels.Push) { p.Settings = map[string]string{"url": "/hook"} }, webhook.ReasonMissingURL},
		{"no host", func(p *channels.Push) { p.Settings = map[string]string{"url": "http:///hook"} }, webhook.ReasonMissingURL},
		{"other scheme", func(p *channels.Push) { p.Settings = map[string]string{"url": "ftp://example.com/hook?k=sekrit"} }, webhook.ReasonMissingURL},
		{"no secret", func(p *channels.Push) { p.Secret = nil }, webhook.ReasonMissingSecret},
		{"invalid data", func(p *channels.Push) { p.Data = json.RawMessage(`{"a":`) }, webhook.ReasonInvalidData},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := pushTo(f.URL)
			tc.modify(&p)
			_, err := w.Send(context.Background(), p)
			checkSendError(t, err, channels.Permanent, tc.reason, nil)
			if strings.Contains(err.Error(), "sekrit") {
				t.Errorf("error %q reveals the URL's query", err)
			}
		})
	}
	if n := f.requests.Load(); n != 0 {
		t.Errorf("the receiver saw %d requests for invalid pushes", n)
	}
}

func TestCustomClient(t *testing.T) {
	f := newFakeReceiver(t)
	var trips atomic.Int32
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		trips.Add(1)
		return http.DefaultTransport.RoundTrip(r)
	})}
	w := newWebhook(t, webhook.Config{Client: client})
	if _, err := w.Send(context.Background(), pushTo(f.URL)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if trips.Load() != 1 {
		t.Errorf("the configured client made %d round trips, want 1", trips.Load())
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestNew(t *testing.T) {
	w, err := webhook.New(webhook.Config{})
	if err != nil {
		t.Fatalf("New with the zero Config: %v", err)
	}
	if w.Name() != "webhook" {
		t.Errorf("Name() = %q", w.Name())
	}
	_, err = webhook.New(webhook.Config{Timeout: -time.Second, UserAgent: "evil\r\nX-Injected: 1"})
	if err == nil {
		t.Fatal("New accepted a negative Timeout and a UserAgent with CRLF")
	}
	for _, want := range []string{"Timeout", "UserAgent"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not report %s", err, want)
		}
	}
}

func TestVerifySignature(t *testing.T) {
	body := []byte(`{"message_id":"m"}`)
	good := webhook.Sign(secret, "1700000000", body)
	other := webhook.Sign([]byte("old secret"), "1700000000", body)
	tests := []struct {
		name   string
		secret []byte
		ts     string
		body   []byte
		header string
		want   bool
	}{
		{"valid", secret, "1700000000", body, good, true},
		{"uppercase hex", secret, "1700000000", body, "v1=" + strings.ToUpper(good[3:]), true},
		{"one of several", secret, "1700000000", body, other + ", " + good, true},
		{"tampered body", secret, "1700000000", []byte(`{"message_id":"n"}`), good, false},
		{"other timestamp", secret, "1700000001", body, good, false},
		{"other secret", []byte("x"), "1700000000", body, good, false},
		{"empty secret", nil, "1700000000", body, webhook.Sign(nil, "1700000000", body), false},
		{"no version", secret, "1700000000", body, good[3:], false},
		{"other version", secret, "1700000000", body, "v2=" + good[3:], false},
		{"truncated", secret, "1700000000", body, good[:len(good)-2], false},
		{"not hex", secret, "1700000000", body, "v1=" + strings.Repeat("zz", 32), false},
		{"empty header", secret, "1700000000", body, "", false},
	}
	for _, tc := range tests {
		if got := webhook.VerifySignature(tc.secret, tc.ts, tc.body, tc.header); got != tc.want {
			t.Errorf("%s: VerifySignature = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func FuzzVerifySignature(f *testing.F) {
	f.Add([]byte("k"), "1700000000", []byte(`{}`), "v1=00")
	f.Add([]byte("s3cret-for-docs"), "1767225600", []byte(`{"a":1}`), "v1=09d3de1b4dbfbd1ee108d1680c5d519c6a54a195cc89feeb20052e3ed61f6931,v1=")
	f.Fuzz(func(t *testing.T, secret []byte, ts string, body []byte, header string) {
		webhook.VerifySignature(secret, ts, body, header) // must not panic
		if len(secret) == 0 {
			return
		}
		sig := webhook.Sign(secret, ts, body)
		if !webhook.VerifySignature(secret, ts, body, sig) {
			t.Fatalf("own signature %s does not verify", sig)
		}
		if !webhook.VerifySignature(secret, ts, body, header+","+sig) {
			t.Fatalf("own signature after %q does not verify", header)
		}
		if webhook.VerifySignature(secret, ts, append(body, 'x'), sig) {
			t.Fatal("signature verifies a longer body")
		}
	})
}
