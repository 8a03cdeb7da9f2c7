package platform_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/pushledger/pushledger/api"
	"github.com/pushledger/pushledger/api/client"
	"github.com/pushledger/pushledger/api/signing"
	"github.com/pushledger/pushledger/cmd/pushledger/internal/platform"
	"github.com/pushledger/pushledger/domain/message"
)

// BenchmarkREST measures durable accepts over real HTTP on loopback, beside
// a do-nothing Echo handler answering the same signed requests, in the same
// run and with the same load generator (-rest.clients concurrent keep-alive
// clients in this process, default 64; 4 for batches). Compare msgs/s of
// accept-1 with noop-echo for the ratio.
//
//	go test ./cmd/pushledger/internal/platform/ -run '^$' -bench 'REST/(noop-echo|accept-1)$' -benchtime 10000x
//	go test ./cmd/pushledger/internal/platform/ -run '^$' -bench 'REST/.*batch' -benchtime 60x
var restClients = flag.Int("rest.clients", 64, "BenchmarkREST: concurrent clients of the one-message cases")

func BenchmarkREST(b *testing.B) {
	clients := *restClients
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}, Timeout: time.Minute}
	srv := startBench(b, platform.Config{GatewayAddr: "off", DataDir: b.TempDir(), NoDispatcher: true}, hc)
	defer srv.Stop()
	base, ctx := srv.Base, context.Background()
	c, app := srv.App(b, api.CreateAppRequest{Name: "bench"})
	for i := range 100 {
		if err := c.Do(ctx, http.MethodPut, fmt.Sprintf("/v1/devices/d%d", i), nil, api.DeviceRequest{Platform: "android"}, nil); err != nil {
			b.Fatal(err)
		}
	}

	noop := echo.New()
	noop.POST("/v1/messages", func(c echo.Context) error {
		_, _ = io.Copy(io.Discard, c.Request().Body)
		return c.JSON(http.StatusAccepted, api.AcceptedResponse{MessageIDs: []string{"0"}})
	})
	nln, _ := net.Listen("tcp", "127.0.0.1:0")
	nsrv := &http.Server{Handler: noop}
	go nsrv.Serve(nln)
	defer nsrv.Close()
	noopBase := "http://" + nln.Addr().String()

	one := func(i int) any {
		return api.MessageRequest{Audience: message.Audience{DeviceIDs: []string{fmt.Sprintf("d%d", i%100)}},
			Notification: &message.Notification{Title: "Sale", Body: "Everything must go"}}
	}
	batch := func(i int) any {
		var r api.BatchRequest
		for j := range 1000 {
			r.Messages = append(r.Messages, one(i*1000+j).(api.MessageRequest))
		}
		return r
	}
	cases := []struct {
		name   string
		base   string
		body   func(int) any
		perReq int
		want   int
	}{
		{"noop-echo", noopBase, one, 1, http.StatusAccepted},
		{"accept-1", base, one, 1, http.StatusAccepted},
		{"noop-echo-batch-1000", noopBase, batch, 1000, http.StatusAccepted},
		{"accept-batch-1000", base, batch, 1000, http.StatusAccepted},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			n := b.N
			par := clients
			if tc.perReq > 1 {
				par = 4
			}
			// Bodies are built and signed outside the timed part (nonces
			// must be unique, so every request is signed once).
			reqs := make([][]byte, n)
			for i := range n {
				reqs[i], _ = json.Marshal(tc.body(i))
			}
			lat := make([]time.Duration, n)
			var next int
			var mu sync.Mutex
			var wg sync.WaitGroup
			b.ResetTimer()
			cpu0 := cpuTime()
			start := time.Now()
			for range par {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						mu.Lock()
						i := next
						next++
						mu.Unlock()
						if i >= n {
							return
						}
						req, _ := http.NewRequest(http.MethodPost, tc.base+"/v1/messages", bytes.NewReader(reqs[i]))
						req.Header.Set("Content-Type", "application/json")
						_ = signing.SignRequest(req, app.AppKey, []byte(app.AppSecret), time.Now(), signing.NewNonce(), reqs[i])
						t0 := time.Now()
						resp, err := hc.Do(req)
						if err != nil {
							b.Error(err)
							return
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						lat[i] = time.Since(t0)
						if resp.StatusCode != tc.want {
							b.Errorf("status %d", resp.StatusCode)
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric((cpuTime()-cpu0).Seconds()/elapsed.Seconds(), "cpu-cores")
			slices.Sort(lat)
			b.ReportMetric(float64(n*tc.perReq)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(n)/elapsed.Seconds(), "req/s")
			b.ReportMetric(float64(lat[n/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[n*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// cpuTime is the CPU time (user and system) this process has used: the
// load generator's and the server's, which share the machine's cores.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchServer is the embedded platform serving on a free port for a
// benchmark.
type benchServer struct {
	P    *platform.Platform
	Base string
	HTTP *http.Client
	stop func()
}

// startBench opens the platform with cfg (logs discarded) and serves it
// until Stop, waiting until it is healthy; hc is the benchmark's client.
func startBench(b *testing.B, cfg platform.Config, hc *http.Client) *benchServer {
	b.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := platform.Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, ln) }()
	s := &benchServer{P: p, Base: "http://" + ln.Addr().String(), HTTP: hc, stop: func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
		p.Close()
	}}
	waitHealthy(b, hc, s.Base)
	return s
}

// Stop stops the platform and closes its stores.
func (s *benchServer) Stop() { s.stop() }

// App creates an app and returns a client signing as it.
func (s *benchServer) App(b *testing.B, req api.CreateAppRequest) (*client.Client, api.CreatedApp) {
	b.Helper()
	admin := &client.Client{BaseURL: s.Base, AdminToken: s.P.AdminToken, HTTP: s.HTTP}
	var app api.CreatedApp
	if err := admin.Do(context.Background(), http.MethodPost, "/admin/v1/apps", nil, req, &app); err != nil {
		b.Fatal(err)
	}
	return &client.Client{BaseURL: s.Base, AppKey: app.AppKey, AppSecret: app.AppSecret, HTTP: s.HTTP}, app
}

func waitHealthy(b *testing.B, hc *http.Client, base string) {
	for range 2000 {
		resp, err := hc.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Fatal("server not healthy")
}
