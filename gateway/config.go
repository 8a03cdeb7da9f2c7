package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/pushledger/pushledger/gateway/wire"
)

// Defaults of Config (docs/gateway-protocol.md, "Server defaults").
const (
	DefaultAddr                = "tcp://0.0.0.0:7100"
	DefaultHeartbeatInterval   = 240 * time.Second
	DefaultIdleTimeout         = 540 * time.Second
	DefaultConnectTimeout      = 10 * time.Second
	DefaultOutboundCap         = 1 << 20
	DefaultTick                = 250 * time.Millisecond
	DefaultCloseTimeout        = time.Second
	DefaultDrainTimeout        = 10 * time.Second
	DefaultShutdownRetrySpread = 30 * time.Second
	DefaultWheelSlots          = 1024
)

// Config configures a Server. The zero value of every field selects its
// default; New reports every invalid field at once.
type Config struct {
	// Addr is the listen address in gnet form: "tcp://host:port" (also
	// "tcp4://", "tcp6://"). Port 0 picks a free port; Server.Addr
	// reports it. Default DefaultAddr.
	Addr string
	// Heartbeat is announced in CONNACK: how often devices PING and how
	// long the server waits for any frame before it disconnects with 3002.
	// Default 240 s / 540 s. Change it at run time with SetHeartbeat.
	Heartbeat wire.Heartbeat
	// MaxFrameSize is announced in CONNACK and enforced on inbound frames
	// after it (before it, wire.DefaultMaxFrameSize applies); it also
	// bounds the payload Push accepts. wire.MinMaxFrameSize ..
	// wire.MaxMaxFrameSize, default wire.DefaultMaxFrameSize (64 KiB).
	MaxFrameSize uint32
	// ConnectTimeout is how long a connection may take to deliver its
	// CONNECT (after the PROXY header and Noise handshake, which count
	// against it too); then 3003. Default 10 s.
	ConnectTimeout time.Duration
	// OutboundCap bounds, per connection, the bytes accepted by Push but
	// not yet written to the socket (queued, plus gnet's outbound buffer
	// once the kernel's send buffer is full). A connection whose pending
	// bytes would exceed it is disconnected with 3004 slow consumer; at
	// any moment a connection holds at most 2 × OutboundCap bytes of
	// output. At least MaxFrameSize + 4; default 1 MiB.
	OutboundCap int
	// Tick is the resolution of every timer (idle, connect and close
	// timeouts): each event loop sweeps its timing wheel every Tick.
	// Default 250 ms.
	Tick time.Duration
	// WheelSlots is the number of slots of each event loop's timing wheel,
	// a power of two; a deadline further than WheelSlots × Tick away is
	// rechecked once per turn. Default 1024.
	WheelSlots int
	// CloseTimeout is how long the server waits, after it sent a
	// DISCONNECT, for its output to drain and for the device to close,
	// before it closes the socket. Default 1 s.
	CloseTimeout time.Duration
	// DrainTimeout bounds the graceful drain when Run's context ends:
	// every connection gets DISCONNECT 3001, then Run waits up to this
	// long for them to close before stopping the engine. Default 10 s.
	DrainTimeout time.Duration
	// ShutdownRetrySpread spreads the retry_after_ms of the 3001
	// DISCONNECTs sent while draining uniformly over [0, spread), so
	// devices do not reconnect all at once. Default 30 s.
	ShutdownRetrySpread time.Duration
	// EventLoops is the number of gnet event loops; default one per CPU.
	EventLoops int
	// ProxyProtocol makes every connection start with a PROXY protocol v2
	// header (sent by a load balancer in front of the gateway); the
	// device's address is taken from it. A connection without a valid
	// header is closed. Default off.
	ProxyProtocol bool
	// NoiseKey, when set, is the server's static X25519 private key (32
	// bytes): every connection starts with a Noise_NK handshake and all
	// frames travel encrypted (docs/gateway-protocol.md, "Transport
	// security"). Devices pin the matching public key
	// (NoisePublicKey). Default: plain TCP.
	NoiseKey []byte
	// Logger receives the server's and gnet's logs; default slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Heartbeat.IsZero() {
		c.Heartbeat = wire.Heartbeat{Interval: DefaultHeartbeatInterval, IdleTimeout: DefaultIdleTimeout}
	}
	if c.MaxFrameSize == 0 {
		c.MaxFrameSize = wire.DefaultMaxFrameSize
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.OutboundCap == 0 {
		c.OutboundCap = DefaultOutboundCap
	}
	if c.Tick == 0 {
		c.Tick = DefaultTick
	}
	if c.WheelSlots == 0 {
		c.WheelSlots = DefaultWheelSlots
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.ShutdownRetrySpread == 0 {
		c.ShutdownRetrySpread = DefaultShutdownRetrySpread
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("gateway: config: "+format, args...)) }
	if !strings.HasPrefix(c.Addr, "tcp://") && !strings.HasPrefix(c.Addr, "tcp4://") && !strings.HasPrefix(c.Addr, "tcp6://") {
		bad("Addr %q: want tcp://host:port", c.Addr)
	}
	if err := checkHeartbeat(c.Heartbeat); err != nil {
		errs = append(errs, err)
	}
	if c.MaxFrameSize < wire.MinMaxFrameSize || c.MaxFrameSize > wire.MaxMaxFrameSize {
		bad("MaxFrameSize %d not in %d..%d", c.MaxFrameSize, wire.MinMaxFrameSize, wire.MaxMaxFrameSize)
	}
	if c.ConnectTimeout < 0 {
		bad("negative ConnectTimeout %v", c.ConnectTimeout)
	}
	if c.OutboundCap < int(c.MaxFrameSize)+wire.PrefixSize {
		bad("OutboundCap %d is less than MaxFrameSize+4 (%d)", c.OutboundCap, int(c.MaxFrameSize)+wire.PrefixSize)
	}
	if c.Tick < time.Millisecond {
		bad("Tick %v is less than 1ms", c.Tick)
	}
	if c.WheelSlots < 2 || c.WheelSlots&(c.WheelSlots-1) != 0 {
		bad("WheelSlots %d is not a power of two >= 2", c.WheelSlots)
	}
	if c.CloseTimeout < 0 {
		bad("negative CloseTimeout %v", c.CloseTimeout)
	}
	if c.DrainTimeout < 0 {
		bad("negative DrainTimeout %v", c.DrainTimeout)
	}
	if c.ShutdownRetrySpread < 0 || c.ShutdownRetrySpread/time.Millisecond > wire.MaxMillis {
		bad("ShutdownRetrySpread %v not in 0..%dms", c.ShutdownRetrySpread, uint64(wire.MaxMillis))
	}
	if c.EventLoops < 0 {
		bad("negative EventLoops %d", c.EventLoops)
	}
	if c.NoiseKey != nil && len(c.NoiseKey) != 32 {
		bad("NoiseKey has %d bytes, want 32", len(c.NoiseKey))
	}
	return errors.Join(errs...)
}

func checkHeartbeat(h wire.Heartbeat) error {
	if h.Interval < time.Millisecond || h.Interval/time.Millisecond > wire.MaxMillis {
		return fmt.Errorf("gateway: heartbeat interval %v not in 1ms..%dms", h.Interval, uint64(wire.MaxMillis))
	}
	if h.IdleTimeout/time.Millisecond <= h.Interval/time.Millisecond || h.IdleTimeout/time.Millisecond > wire.MaxMillis {
		return fmt.Errorf("gateway: idle timeout %v not in (heartbeat interval %v, %dms]", h.IdleTimeout, h.Interval, uint64(wire.MaxMillis))
	}
	return nil
}
