package gateway_test

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
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
//	go test ./gateway/ -run '^$' -bench IdleMemory -benchtime 1x -gateway.idle-conns 8000
//
// Clients run in the benchmark's process, on the same cores as the
// server: the figures are a floor, and a relative measure between the
// gateway and bare gnet.
var idleConns = flag.Int("gateway.idle-conns", 2000, "connections opened by BenchmarkIdleMemory (two descriptors each; the process limit bounds it)")

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
	count atomic.Int64
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

func (s *bareGnet) OnClose(gnet.Conn, error) gnet.Action {
	s.count.Add(-1)
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

func benchPush(b *testing.B, server string, n int) {
	sem := make(chan struct{}, 64*n)
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

// BenchmarkIdleMemory opens -gateway.idle-conns connections (each sends
// CONNECT and waits for CONNACK, then stays idle) and reports the growth
// of the Go heap and of the process's RSS per connection. The devices use
// raw blocking sockets, no Go objects, so the growth is the server's.
func BenchmarkIdleMemory(b *testing.B) {
	for _, server := range []string{"gateway", "baregnet"} {
		b.Run(fmt.Sprintf("server=%s/conns=%d", server, *idleConns), func(b *testing.B) {
			creds := testCredentials(b)
			var addr string
			switch server {
			case "gateway":
				cfg := testConfig()
				cfg.Heartbeat = wire.Heartbeat{Interval: time.Hour, IdleTimeout: 2 * time.Hour}
				cfg.DrainTimeout = 30 * time.Second
				addr = startServer(b, cfg, creds, nil).addr
			default:
				addr = startBareGnet(b, make(chan struct{})).addr()
			}
			for b.Loop() {
				heap, rss := idleRound(b, addr, creds, *idleConns)
				b.ReportMetric(heap, "heap-B/conn")
				b.ReportMetric(rss, "rss-B/conn")
			}
		})
	}
}

func idleRound(b *testing.B, addr string, creds *gateway.Credentials, k int) (heapPerConn, rssPerConn float64) {
	host, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	sa := &unix.SockaddrInet4{Port: port}
	copy(sa.Addr[:], net.ParseIP(host).To4())
	heap0, rss0 := memNow()
	fds := make([]int, k)
	var wg sync.WaitGroup
	var failed atomic.Value
	const workers = 8
	for w := range workers {
		wg.Go(func() {
			for i := w; i < k; i += workers {
				fd, err := idleDevice(sa, fmt.Sprintf("idle-%d", i), creds)
				if err != nil {
					failed.Store(err)
					return
				}
				fds[i] = fd
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	heap1, rss1 := memNow()
	for _, fd := range fds {
		unix.Close(fd)
	}
	return float64(heap1-heap0) / float64(k), float64(rss1-rss0) / float64(k)
}

// idleDevice connects a raw socket, sends CONNECT and reads the 27-byte
// CONNACK, all blocking.
func idleDevice(sa *unix.SockaddrInet4, device string, creds *gateway.Credentials) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return -1, err
	}
	hello, err := wire.AppendFrame(nil, &wire.Connect{AppKey: testApp, DeviceID: device, Credential: creds.Issue(testApp, device), SDKVersion: "bench/1"})
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	if _, err := unix.Write(fd, hello); err != nil {
		unix.Close(fd)
		return -1, err
	}
	var ack [wire.PrefixSize + 23]byte
	for got := 0; got < len(ack); {
		n, err := unix.Read(fd, ack[got:])
		if err != nil || n == 0 {
			unix.Close(fd)
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return -1, fmt.Errorf("reading CONNACK: %w", err)
		}
		got += n
	}
	if wire.Type(ack[5]) != wire.TypeConnack {
		unix.Close(fd)
		return -1, fmt.Errorf("got frame type %v, want CONNACK", wire.Type(ack[5]))
	}
	return fd, nil
}

// memNow returns the live heap after a GC and the RSS, in bytes.
func memNow() (heap, rss int64) {
	runtime.GC()
	debug.FreeOSMemory() // so RSS follows the live heap
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	statm, err := os.ReadFile("/proc/self/statm")
	if err == nil {
		if f := strings.Fields(string(statm)); len(f) > 1 {
			pages, _ := strconv.ParseInt(f[1], 10, 64)
			rss = pages * int64(os.Getpagesize())
		}
	}
	return int64(ms.HeapAlloc), rss
}
