package gateway_test

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/pushledger/pushledger/gateway"
	"github.com/pushledger/pushledger/gateway/wire"
)

// Run with, e.g.:
//
//	go test ./gateway/ -run '^$' -bench . -benchtime 1x            (idle memory: one round)
//	go test ./gateway/ -run '^$' -bench Push -benchtime 200000x
//	go test ./gateway/ -run '^$' -bench IdleMemory -benchtime 1x -gateway.idle-conns 18000 -gateway.idle-procs 3
//
// Clients run on the same cores as the server (BenchmarkPush's in the
// benchmark's process): the figures are a floor, and a relative measure
// between the gateway and bare gnet.
var (
	idleConns = flag.Int("gateway.idle-conns", 2000, "connections BenchmarkIdleMemory holds open to the server (one descriptor each in the benchmark's process: its RLIMIT_NOFILE hard limit bounds it)")
	idleProcs = flag.Int("gateway.idle-procs", 0, "device processes opening BenchmarkIdleMemory's connections; 0: one per 8,000 connections")
)

const benchPayloadSize = 256

// pushServer is what the push benchmark drives: the gateway, or bare gnet
// doing the least a gateway must (frame a PUSH, count ACKs).
type pushServer interface {
	addr() string
	push(dev int, id wire.MessageID, payload []byte) error
	online() int
}

// gatewayTarget adapts the gateway; its handler releases a window slot
// per acknowledged id.
type gatewayTarget struct {
	*testServer
	devices []string
	sem     chan struct{}
}

func (g *gatewayTarget) addr() string { return g.testServer.addr }
func (g *gatewayTarget) online() int  { return int(g.Stats().Online) }
func (g *gatewayTarget) push(dev int, id wire.MessageID, payload []byte) error {
	online, err := g.Push(testApp, g.devices[dev], id, 0, payload)
	if err == nil && !online {
		err = errors.New("device offline")
	}
	return err
}

type semHandler struct {
	gateway.NopHandler
	sem chan struct{}
}

func (h semHandler) OnAck(_ gateway.Conn, ids []wire.MessageID) {
	for range ids {
		<-h.sem
	}
}

// bareGnet is the comparison: a gnet server that answers any first bytes
// with a fixed CONNACK, writes PUSH frames with AsyncWrite, and counts
// the ids of ACK frames; no authentication, timers, queues or caps.
type bareGnet struct {
	gnet.BuiltinEventEngine
	eng     gnet.Engine
	address string
	ready   chan struct{}
	connack []byte
	sem     chan struct{}

	mu    sync.Mutex
	conns map[int]gnet.Conn // by device index (from the device id "dev-N")
	count atomic.Int64      // open connections
	acked atomic.Int64      // open connections that were sent CONNACK
}

func (s *bareGnet) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	fd, err := eng.Dup()
	if err == nil {
		if sa, err := unix.Getsockname(fd); err == nil {
			if sa4, ok := sa.(*unix.SockaddrInet4); ok {
				s.address = fmt.Sprintf("127.0.0.1:%d", sa4.Port)
			}
		}
		unix.Close(fd)
	}
	close(s.ready)
	return gnet.None
}

func (s *bareGnet) OnOpen(gnet.Conn) ([]byte, gnet.Action) {
	s.count.Add(1)
	return nil, gnet.None
}

func (s *bareGnet) OnClose(c gnet.Conn, _ error) gnet.Action {
	s.count.Add(-1)
	if c.Context() != nil {
		s.acked.Add(-1)
	}
	return gnet.None
}

func (s *bareGnet) OnTraffic(c gnet.Conn) gnet.Action {
	buf, _ := c.Peek(-1)
	off := 0
	for {
		f, n, err := wire.Parse(buf[off:])
		if err != nil {
			break
		}
		off += n
		switch f := f.(type) {
		case *wire.Connect:
			if c.Context() == nil {
				c.SetContext(s) // marks CONNACK sent
				if strings.HasPrefix(f.DeviceID, "dev-") && s.conns != nil {
					i, _ := strconv.Atoi(f.DeviceID[4:])
					s.mu.Lock()
					s.conns[i] = c
					s.mu.Unlock()
				}
				_, _ = c.Write(s.connack)
				s.acked.Add(1)
			}
		case *wire.Ack:
			for range f.IDs {
				<-s.sem
			}
		}
	}
	if off > 0 {
		_, _ = c.Discard(off)
	}
	return gnet.None
}

func (s *bareGnet) addr() string { return s.address }
func (s *bareGnet) online() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *bareGnet) push(dev int, id wire.MessageID, payload []byte) error {
	s.mu.Lock()
	c := s.conns[dev]
	s.mu.Unlock()
	b, err := wire.AppendFrame(nil, &wire.Push{ID: id, Payload: payload})
	if err != nil {
		return err
	}
	return c.AsyncWrite(b, nil)
}

func startBareGnet(b *testing.B, sem chan struct{}) *bareGnet {
	b.Helper()
	connack, err := wire.AppendFrame(nil, &wire.Connack{Heartbeat: wire.Heartbeat{Interval: time.Minute, IdleTimeout: 2 * time.Minute}, ServerTime: time.Now(), MaxFrameSize: wire.DefaultMaxFrameSize})
	if err != nil {
		b.Fatal(err)
	}
	s := &bareGnet{ready: make(chan struct{}), connack: connack, sem: sem, conns: map[int]gnet.Conn{}}
	done := make(chan error, 1)
	go func() {
		done <- gnet.Run(s, "tcp://127.0.0.1:0", gnet.WithNumEventLoop(2), gnet.WithTCPNoDelay(gnet.TCPNoDelay), gnet.WithLogger(nopLogger{}))
	}()
	select {
	case <-s.ready:
	case err := <-done:
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = s.eng.Stop(ctx)
		<-done
	})
	return s
}

type nopLogger struct{}

func (nopLogger) Debugf(string, ...any) {}
func (nopLogger) Infof(string, ...any)  {}
func (nopLogger) Warnf(string, ...any)  {}
func (nopLogger) Errorf(string, ...any) {}
func (nopLogger) Fatalf(string, ...any) {}

// ackingDevice connects, and acknowledges every PUSH it reads, one ACK
// for all the PUSH frames of each read.
func ackingDevice(b *testing.B, addr, device string, cred []byte, wg *sync.WaitGroup) net.Conn {
	b.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	hello, err := wire.AppendFrame(nil, &wire.Connect{AppKey: testApp, DeviceID: device, Credential: cred, SDKVersion: "bench/1"})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.Write(hello); err != nil {
		b.Fatal(err)
	}
	wg.Go(func() {
		var d wire.Decoder
		buf := make([]byte, 64<<10)
		var ids []wire.MessageID
		var out []byte
		n := 0
		for {
			m, err := c.Read(buf[n:])
			if err != nil {
				return
			}
			n += m
			off := 0
			ids = ids[:0]
			for {
				f, k, err := d.Parse(buf[off:n])
				if err != nil {
					break
				}
				off += k
				if p, ok := f.(*wire.Push); ok {
					ids = append(ids, p.ID)
				}
			}
			n = copy(buf, buf[off:n])
			if len(ids) > 0 {
				out, _ = wire.AppendFrame(out[:0], &wire.Ack{IDs: ids})
				if _, err := c.Write(out); err != nil {
					return
				}
			}
		}
	})
	return c
}

// BenchmarkPush measures pushes/s, each acknowledged by its device, to N
// connected devices, round robin, with at most 64 unacknowledged pushes
// per device (so neither server's outbound cap nor memory is the limit).
func BenchmarkPush(b *testing.B) {
	for _, server := range []string{"gateway", "baregnet"} {
		for _, n := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("server=%s/conns=%d/payload=%d", server, n, benchPayloadSize), func(b *testing.B) {
				benchPush(b, server, n)
			})
		}
	}
}

// pushTarget starts the server under test and n acking devices.
func pushTarget(b *testing.B, server string, n int, sem chan struct{}) pushServer {
	creds := testCredentials(b)
	devices := make([]string, n)
	for i := range devices {
		devices[i] = "dev-" + strconv.Itoa(i)
	}
	var target pushServer
	switch server {
	case "gateway":
		cfg := testConfig()
		cfg.Heartbeat = wire.Heartbeat{Interval: time.Minute, IdleTimeout: 2 * time.Minute}
		ts := startServer(b, cfg, creds, semHandler{sem: sem})
		target = &gatewayTarget{testServer: ts, devices: devices, sem: sem}
	default:
		target = startBareGnet(b, sem)
	}
	var wg sync.WaitGroup
	conns := make([]net.Conn, n)
	for i, dev := range devices {
		conns[i] = ackingDevice(b, target.addr(), dev, creds.Issue(testApp, dev), &wg)
	}
	b.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	})
	eventually(b, "devices online", func() bool { return target.online() == n })
	return target
}

func benchPush(b *testing.B, server string, n int) {
	sem := make(chan struct{}, 64*n)
	target := pushTarget(b, server, n, sem)
	payload := make([]byte, benchPayloadSize)
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	for i := range b.N { // not b.Loop: the wait for the last ACKs below must be timed
		sem <- struct{}{}
		var id wire.MessageID
		binary.BigEndian.PutUint64(id[8:], uint64(i))
		if err := target.push(i%n, id, payload); err != nil {
			b.Fatal(err)
		}
	}
	for range cap(sem) { // wait for the last acknowledgements
		sem <- struct{}{}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pushes/s")
}

var broadcastConns = flag.Int("gateway.broadcast-conns", 2000, "devices of BenchmarkBroadcast")

// BenchmarkBroadcast is the broadcast pattern: each round pushes one
// message to every one of -gateway.broadcast-conns devices and waits for
// all their acknowledgements, so every push is its own write on its own
// connection. It is the bare gnet figure the platform's broadcast
// (cmd/pushledger/internal/platform, BenchmarkGateway/broadcast-raw)
// compares with.
func BenchmarkBroadcast(b *testing.B) {
	for _, server := range []string{"gateway", "baregnet"} {
		b.Run("server="+server, func(b *testing.B) {
			n := *broadcastConns
			sem := make(chan struct{}, n)
			target := pushTarget(b, server, n, sem)
			payload := make([]byte, benchPayloadSize)
			b.ResetTimer()
			for r := range b.N {
				for i := range n {
					sem <- struct{}{}
					var id wire.MessageID
					binary.BigEndian.PutUint64(id[:8], uint64(r))
					binary.BigEndian.PutUint64(id[8:], uint64(i))
					if err := target.push(i, id, payload); err != nil {
						b.Fatal(err)
					}
				}
				for range n { // every acknowledgement of the round
					sem <- struct{}{}
				}
				for range n {
					<-sem
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

// BenchmarkIdleMemory holds -gateway.idle-conns connections open to one
// server process, opened by -gateway.idle-procs device processes (the
// test binary run again: runIdleChild), each connection sending CONNECT
// and then staying silent, and reports the growth of the server
// process's Go heap (after a GC) and RSS per connection once every device
// is online, with the process's open descriptors at that moment. The
// devices run in other processes, so the growth is the server's, and the
// server's limit on open files is the only cap: one descriptor per
// connection (raised to the hard limit; the ephemeral ports of 127.0.0.1,
// 28,232 by default, come next). Each round starts new device processes.
func BenchmarkIdleMemory(b *testing.B) {
	limit, err := raiseFileLimit()
	if err != nil {
		b.Fatal(err)
	}
	n, procs := *idleConns, *idleProcs
	if procs == 0 {
		procs = (n + idleConnsPerProc - 1) / idleConnsPerProc
	}
	if n < 1 || procs < 1 || procs > n {
		b.Fatalf("-gateway.idle-conns %d, -gateway.idle-procs %d: want 1 <= procs <= conns", n, procs)
	}
	// Beside the connections: the listener, the event loops' epoll and
	// event descriptors, the runtime's, three pipes per device process.
	if need := uint64(n + 3*procs + 32); need > limit {
		b.Fatalf("%d connections need about %d descriptors; RLIMIT_NOFILE is %d (its hard limit)", n, need, limit)
	}
	for _, server := range []string{"gateway", "baregnet"} {
		b.Run(fmt.Sprintf("server=%s/conns=%d/procs=%d", server, n, procs), func(b *testing.B) {
			var srv idleServer
			switch server {
			case "gateway":
				cfg := testConfig()
				cfg.Heartbeat = wire.Heartbeat{Interval: time.Hour, IdleTimeout: 2 * time.Hour}
				cfg.DrainTimeout = 30 * time.Second
				srv = idleGateway{startServer(b, cfg, testCredentials(b), nil)}
			default:
				srv = startBareGnet(b, make(chan struct{}))
			}
			var heap, rss, fds float64
			rounds := 0
			for b.Loop() {
				h, r, f := idleRound(b, srv, n, procs)
				heap, rss, fds = heap+h, rss+r, max(fds, f)
				rounds++
			}
			b.ReportMetric(heap/float64(rounds), "heap-B/conn")
			b.ReportMetric(rss/float64(rounds), "rss-B/conn")
			b.ReportMetric(fds, "server-fds")
		})
	}
}

// idleConnsPerProc is the default share of each device process.
const idleConnsPerProc = 8000

// idleServer is what BenchmarkIdleMemory measures.
type idleServer interface {
	addr() string
	connected() int // connections sent CONNACK and open
	open() int      // connections open
}

type idleGateway struct{ *testServer }

func (g idleGateway) addr() string   { return g.testServer.addr }
func (g idleGateway) connected() int { return int(g.Stats().Online) }
func (g idleGateway) open() int      { return int(g.Stats().Connections) }

func (s *bareGnet) connected() int { return int(s.acked.Load()) }
func (s *bareGnet) open() int      { return int(s.count.Load()) }

// idleRound opens n connections from procs device processes, measures
// the growth once the server has them all online, and closes them.
func idleRound(b *testing.B, srv idleServer, n, procs int) (heapPerConn, rssPerConn, fds float64) {
	timeout := 30*time.Second + time.Duration(n)*time.Millisecond
	var p deviceProcs
	defer p.stop()
	p.start(b, srv.addr(), n, procs)
	heap0, rss0 := memNow()
	p.connect(b, timeout)
	poll(b, timeout, func() bool { return srv.connected() == n }, func() string {
		return fmt.Sprintf("%d of %d devices online (%d connections open)", srv.connected(), n, srv.open())
	})
	heap1, rss1 := memNow()
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		fds = float64(len(ents))
	}
	p.stop()
	poll(b, timeout, func() bool { return srv.open() == 0 }, func() string {
		return fmt.Sprintf("%d connections still open", srv.open())
	})
	return float64(heap1-heap0) / float64(n), float64(rss1-rss0) / float64(n), fds
}

// poll checks cond every few milliseconds until it holds, failing with
// state() after timeout.
func poll(b *testing.B, timeout time.Duration, cond func() bool, state func() string) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("after %v: %s", timeout, state())
		}
		<-tick.C
	}
}

// memNow returns the live heap after a GC and the resident set (VmRSS),
// in bytes.
func memNow() (heap, rss int64) {
	runtime.GC()
	debug.FreeOSMemory() // so RSS follows the live heap
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return int64(ms.HeapAlloc), 0
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			rss = kb << 10
		}
	}
	return int64(ms.HeapAlloc), rss
}
