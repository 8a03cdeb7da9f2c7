package platform_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushledger/pushledger/adapters/ledger"
	"github.com/pushledger/pushledger/api"
	"github.com/pushledger/pushledger/api/client"
	"github.com/pushledger/pushledger/cmd/pushledger/internal/platform"
	"github.com/pushledger/pushledger/domain/message"
	gwclient "github.com/pushledger/pushledger/gateway/client"
	"github.com/pushledger/pushledger/gateway/wire"
)

var (
	gwDevices = flag.Int("gw.devices", 1000, "BenchmarkGateway: connected devices (Go SDK clients in this process)")
	gwRate    = flag.Int("gw.rate", 2000, "BenchmarkGateway/unicast: messages submitted per second")
	gwOffline = flag.Int("gw.offline", 0, "BenchmarkGateway/broadcast-raw: devices registered besides the connected ones, never connected")
	// The devices' SDKs fsync their dedup store at every push: on the
	// server's disk, 2,000 device fsyncs a second would compete with the
	// ledger's, which real devices do not.
	gwDeviceStore = flag.String("gw.device-store", "", "BenchmarkGateway: directory of the device SDKs' stores (default: the test's temporary directory; /dev/shm keeps their fsyncs off the server's disk)")
)

// deviceStoreDir is a new directory for one device SDK's store.
func deviceStoreDir(b *testing.B) string {
	if *gwDeviceStore == "" {
		return b.TempDir()
	}
	dir, err := os.MkdirTemp(*gwDeviceStore, "pushledger-device-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// benchPlatform starts the embedded platform with the gateway on a free
// port, an app delivering through it, and n devices connected through the
// Go SDK; onPush gets every push with its arrival time.
func benchPlatform(b *testing.B, n int, onPush func(device int, p gwclient.Push, at time.Time)) (*platform.Platform, *client.Client) {
	b.Helper()
	srv := startBench(b, platform.Config{DataDir: b.TempDir(), GatewayAddr: "tcp://127.0.0.1:0"},
		&http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}, Timeout: time.Minute})
	p := srv.P
	c, app := srv.App(b, api.CreateAppRequest{Name: "bench", Gateway: true})
	ctx, cancel := context.WithCancel(context.Background()) // the devices'
	var wg sync.WaitGroup
	sdks := make([]*gwclient.Client, n)
	for i := range n {
		id := fmt.Sprintf("d%d", i)
		if err := c.Do(ctx, http.MethodPut, "/v1/devices/"+id, nil, api.DeviceRequest{Platform: "android"}, nil); err != nil {
			b.Fatal(err)
		}
		acc, err := c.GatewayAccess(ctx, id)
		if err != nil {
			b.Fatal(err)
		}
		sdk, err := gwclient.New(gwclient.Config{Addr: acc.Addr, AppKey: app.AppKey, DeviceID: id, Credential: acc.Credential,
			ServerKey: acc.ServerKey, StoreDir: deviceStoreDir(b), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
			gwclient.HandlerFunc(func(_ context.Context, push gwclient.Push) error { onPush(i, push, time.Now()); return nil }))
		if err != nil {
			b.Fatal(err)
		}
		sdks[i] = sdk
		wg.Add(1)
		go func() { defer wg.Done(); _ = sdk.Run(ctx) }()
	}
	for p.Gateway.Stats().Online < int64(n) {
		time.Sleep(10 * time.Millisecond)
	}
	b.Cleanup(func() {
		cancel()
		wg.Wait()
		for _, s := range sdks {
			s.Close()
		}
		srv.Stop()
	})
	return p, c
}

// BenchmarkGateway measures delivery through the device gateway on the
// embedded platform, with -gw.devices Go SDK devices connected from this
// process (Noise-encrypted):
//
//   - unicast: messages to one device each, submitted over REST at
//     -gw.rate per second; latency from the submit to the device's SDK
//     handing the push to the app (p50, p99);
//
//   - broadcast: one message to every device; deliveries per second until
//     every device's acknowledgement is recorded in the ledger.
//
//     go test ./cmd/pushledger/internal/platform/ -run '^$' -bench 'Gateway/unicast' -benchtime 10000x
//     go test ./cmd/pushledger/internal/platform/ -run '^$' -bench 'Gateway/broadcast' -benchtime 5x -gw.devices 5000
func BenchmarkGateway(b *testing.B) {
	b.Run("unicast", func(b *testing.B) {
		n := *gwDevices
		var mu sync.Mutex
		var lat []time.Duration
		arrived := map[string]time.Time{}
		submitted := map[string]time.Time{}
		var got atomic.Int64
		p, c := benchPlatform(b, n, func(_ int, p gwclient.Push, at time.Time) {
			var pl struct {
				Data struct {
					T int64 `json:"t"`
				} `json:"data"`
			}
			if json.Unmarshal(p.Payload, &pl) == nil && pl.Data.T > 0 {
				mu.Lock()
				lat = append(lat, at.Sub(time.Unix(0, pl.Data.T)))
				if len(arrived) < 5000 {
					arrived[p.ID.String()] = at
					submitted[p.ID.String()] = time.Unix(0, pl.Data.T)
				}
				mu.Unlock()
			}
			got.Add(1)
		})
		ctx := context.Background()
		interval := time.Second / time.Duration(*gwRate)
		sem := make(chan struct{}, 256)
		b.ResetTimer()
		cpu0 := cpuTime()
		start := time.Now()
		var wg sync.WaitGroup
		for i := range b.N {
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d) // the pacer (load generator), not a wait for an outcome
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				data := fmt.Sprintf(`{"t":%d}`, time.Now().UnixNano())
				err := c.Do(ctx, http.MethodPost, "/v1/messages", nil, api.MessageRequest{
					Audience: message.Audience{DeviceIDs: []string{fmt.Sprintf("d%d", i%n)}}, Data: json.RawMessage(data)}, nil)
				if err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		deadline := time.Now().Add(time.Minute)
		for got.Load() < int64(b.N) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		b.ReportMetric((cpuTime()-cpu0).Seconds()/elapsed.Seconds(), "cpu-cores")
		mu.Lock()
		defer mu.Unlock()
		if len(lat) < b.N {
			b.Fatalf("%d of %d pushes arrived", len(lat), b.N)
		}
		slices.Sort(lat)
		// Where the time goes, from the events' times of a sample: accepted
		// to the attempt's start (the saga), and the start to the device.
		var toAccept, toStart, toDevice []time.Duration
		for id, at := range arrived {
			evs, err := p.Ledger.ReadStream(context.Background(), message.Stream(id), ledger.Forwards, 0, 0)
			if err != nil {
				b.Fatal(err)
			}
			var acc, start time.Time
			for _, re := range evs {
				e, err := message.Decode(re.Type, re.Data)
				if err != nil {
					b.Fatal(err)
				}
				switch e := e.(type) {
				case message.Accepted:
					acc = e.At
				case message.Sending:
					if start.IsZero() {
						start = e.At
					}
				}
			}
			toAccept = append(toAccept, acc.Sub(submitted[id]))
			toStart, toDevice = append(toStart, start.Sub(acc)), append(toDevice, at.Sub(start))
		}
		for _, st := range []struct {
			name string
			d    []time.Duration
		}{{"submit-to-accepted", toAccept}, {"accepted-to-sending", toStart}, {"sending-to-device", toDevice}} {
			if len(st.d) == 0 {
				continue
			}
			slices.Sort(st.d)
			b.ReportMetric(float64(st.d[len(st.d)/2].Microseconds())/1000, st.name+"-p50-ms")
			b.ReportMetric(float64(st.d[len(st.d)*99/100].Microseconds())/1000, st.name+"-p99-ms")
		}
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(0, "ns/op")
	})
	b.Run("broadcast-raw", func(b *testing.B) {
		n := *gwDevices
		var received atomic.Int64
		p, c := rawDevices(b, n, &received)
		b.ResetTimer()
		total := broadcastRounds(b, p, c, n, &received)
		b.ReportMetric(float64(n*b.N)/total.Seconds(), "deliveries/s")
		b.ReportMetric(total.Seconds()/float64(b.N), "s/broadcast")
		b.ReportMetric(0, "ns/op")
	})
	b.Run("broadcast", func(b *testing.B) {
		n := *gwDevices
		var got atomic.Int64
		p, c := benchPlatform(b, n, func(int, gwclient.Push, time.Time) { got.Add(1) })
		b.ResetTimer()
		total := broadcastRounds(b, p, c, n, &got)
		b.ReportMetric(float64(n*b.N)/total.Seconds(), "deliveries/s")
		b.ReportMetric(total.Seconds()/float64(b.N), "s/broadcast")
		b.ReportMetric(0, "ns/op")
	})
}

// broadcastRounds sends b.N broadcasts, one after the other, each until all
// n devices' acknowledgements are in the ledger, and returns the time taken.
func broadcastRounds(b *testing.B, p *platform.Platform, c *client.Client, n int, received *atomic.Int64) time.Duration {
	ctx := context.Background()
	var total, toDevices time.Duration
	cpu0 := cpuTime()
	for range b.N {
		base := received.Load()
		// The acknowledgements are watched on a ledger subscription: each
		// event is read once, as soon as it is committed.
		last, err := p.Ledger.LastPosition(ctx)
		if err != nil {
			b.Fatal(err)
		}
		sub, err := p.Ledger.Subscribe(ctx, last, ledger.Filter{StreamPrefixes: []string{message.StreamPrefix}})
		if err != nil {
			b.Fatal(err)
		}
		reached := make(chan time.Time, 1)
		go func() {
			for received.Load() < base+int64(n) {
				time.Sleep(200 * time.Microsecond) // polling the devices' counter
			}
			reached <- time.Now()
		}()
		start := time.Now()
		var out api.AcceptedResponse
		if err := c.Do(ctx, http.MethodPost, "/v1/messages", nil, api.MessageRequest{
			Audience: message.Audience{Broadcast: true}, Notification: &message.Notification{Title: "all"}}, &out); err != nil {
			b.Fatal(err)
		}
		stream := message.Stream(out.MessageIDs[0])
		delivered := map[string]bool{}
		for len(delivered) < n {
			evs, err := sub.Recv(ctx)
			if err != nil {
				b.Fatal(err)
			}
			for _, e := range evs {
				if e.Stream != stream || (e.Type != message.TypeDeliveredBatch && e.Type != message.TypeDelivered) {
					continue
				}
				ev, err := message.Decode(e.Type, e.Data)
				if err != nil {
					b.Fatal(err)
				}
				switch ev := ev.(type) {
				case message.DeliveredBatch:
					for _, d := range ev.DeviceIDs {
						delivered[d] = true
					}
				case message.Delivered:
					delivered[ev.DeviceID] = true
				}
			}
		}
		total += time.Since(start)
		toDevices += (<-reached).Sub(start)
		sub.Close()
	}
	// Time until every device had the push, and until the ledger held
	// every acknowledgement (s/broadcast).
	b.ReportMetric(toDevices.Seconds()/float64(b.N), "s-to-every-device")
	b.ReportMetric((cpuTime()-cpu0).Seconds()/total.Seconds(), "cpu-cores")
	return total
}

// rawDevices starts the platform with a plain-TCP gateway and n devices
// that speak the protocol with nothing else: read a PUSH, answer ACK (the
// same clients as the bare gnet program's, so that the two compare).
func rawDevices(b *testing.B, n int, received *atomic.Int64) (*platform.Platform, *client.Client) {
	b.Helper()
	srv := startBench(b, platform.Config{DataDir: b.TempDir(), GatewayAddr: "tcp://127.0.0.1:0", GatewayPlain: true},
		&http.Client{Timeout: time.Minute})
	p, ctx := srv.P, context.Background()
	c, app := srv.App(b, api.CreateAppRequest{Name: "bench", Gateway: true})
	addr := p.Gateway.Addr().String()
	var conns []net.Conn
	for i := range n {
		id := fmt.Sprintf("d%d", i)
		if err := c.Do(ctx, http.MethodPut, "/v1/devices/"+id, nil, api.DeviceRequest{Platform: "android"}, nil); err != nil {
			b.Fatal(err)
		}
		cred, _, _, err := p.IssueCredential(app.AppKey, id)
		if err != nil {
			b.Fatal(err)
		}
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, conn)
		frame, _ := wire.AppendFrame(nil, &wire.Connect{AppKey: app.AppKey, DeviceID: id, Credential: cred, SDKVersion: "raw/1"})
		if _, err := conn.Write(frame); err != nil {
			b.Fatal(err)
		}
		go func() {
			r := wire.NewReader(conn)
			var out []byte
			for {
				f, err := r.ReadFrame()
				if err != nil {
					return
				}
				if push, ok := f.(*wire.Push); ok {
					received.Add(1)
					out, _ = wire.AppendFrame(out[:0], &wire.Ack{IDs: []wire.MessageID{push.ID}})
					if _, err := conn.Write(out); err != nil {
						return
					}
				}
			}
		}()
	}
	for p.Gateway.Stats().Online < int64(n) {
		time.Sleep(10 * time.Millisecond)
	}
	// Devices that never connect: a broadcast is kept for them in the
	// outbox, and only the online ones get it at once.
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < *gwOffline; i += 16 {
				if err := c.Do(ctx, http.MethodPut, fmt.Sprintf("/v1/devices/off%d", i), nil, api.DeviceRequest{Platform: "android"}, nil); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.Cleanup(func() {
		for _, conn := range conns {
			conn.Close()
		}
		srv.Stop()
	})
	return p, c
}
