package gateway

import (
	"sync/atomic"

	"github.com/pushledger/pushledger/gateway/wire"
)

// Stats is a snapshot of a Server's counters, for metrics.
type Stats struct {
	// Connections is the number of open TCP connections, Online the
	// number of those that are authenticated (reachable by Push).
	Connections, Online int64
	// Accepted counts every TCP connection accepted since start.
	Accepted uint64
	// Pushes counts PUSH frames written to sockets, PushBytes their bytes.
	Pushes, PushBytes uint64
	// DisconnectsSent counts the DISCONNECT frames the server sent, by
	// code; DisconnectsReceived those devices sent. Only codes seen are
	// present.
	DisconnectsSent, DisconnectsReceived map[wire.Code]uint64
	// Lost counts connections that closed without a DISCONNECT either way.
	Lost uint64
	// OutboundHighWater is the most output bytes one connection held
	// pending (queued by Push plus gnet's outbound buffer), as measured
	// before each write: bounded by 2 × Config.OutboundCap.
	OutboundHighWater int64
}

type counters struct {
	connections, online atomic.Int64
	accepted            atomic.Uint64
	pushes, pushBytes   atomic.Uint64
	sent, received      [1000]atomic.Uint64 // index: code - 3000
	lost                atomic.Uint64
	highWater           atomic.Int64
}

func (c *counters) countSent(code wire.Code) {
	if code.Valid() {
		c.sent[code-3000].Add(1)
	}
}

func (c *counters) countReceived(code wire.Code) {
	if code.Valid() {
		c.received[code-3000].Add(1)
	}
}

func (c *counters) observeOutbound(n int64) {
	for {
		cur := c.highWater.Load()
		if n <= cur || c.highWater.CompareAndSwap(cur, n) {
			return
		}
	}
}

func (c *counters) snapshot() Stats {
	s := Stats{
		Connections:         c.connections.Load(),
		Online:              c.online.Load(),
		Accepted:            c.accepted.Load(),
		Pushes:              c.pushes.Load(),
		PushBytes:           c.pushBytes.Load(),
		DisconnectsSent:     map[wire.Code]uint64{},
		DisconnectsReceived: map[wire.Code]uint64{},
		Lost:                c.lost.Load(),
		OutboundHighWater:   c.highWater.Load(),
	}
	for i := range c.sent {
		if n := c.sent[i].Load(); n != 0 {
			s.DisconnectsSent[wire.Code(3000+i)] = n
		}
		if n := c.received[i].Load(); n != 0 {
			s.DisconnectsReceived[wire.Code(3000+i)] = n
		}
	}
	return s
}
