package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/pushledger/pushledger/gateway/wire"
)

type connState uint8

const (
	stateProxy     connState = iota // waiting for the PROXY v2 header
	stateHandshake                  // waiting for the Noise handshake
	stateConnect                    // waiting for CONNECT
	stateOpen                       // CONNACK sent
	stateClosing                    // DISCONNECT sent; draining output, waiting for the peer to close
	stateClosed                     // gnet closed the socket
)

// session is one TCP connection. Fields above mu belong to the
// connection's event loop; those below are shared with Push callers.
type session struct {
	s    *Server
	l    *loop
	gc   gnet.Conn
	prev *session // wheel links
	next *session
	slot int32 // wheel slot, -1 when not in the wheel

	state       connState
	pendingShut bool  // closing: shut down writing once the output drained
	registered  bool  // in the registry (authenticated and not closing)
	authed      bool  // OnConnect was called
	opened      int64 // tick of accept
	lastSeen    int64 // tick of the last whole frame
	idle        int64 // idle timeout in ticks
	nextIdle    int64 // idle timeout from the next PING on; 0: none pending
	closeAt     int64 // closing: tick to close the socket at
	hbVersion   uint64
	need        int  // inbound bytes the next frame needs; 0: unknown
	conn        Conn // ID and Remote from accept, the rest from CONNECT
	sentCode    wire.Code
	recvCode    wire.Code
	noise       *noiseState // nil until a Noise handshake completed

	mu          sync.Mutex
	out         *[]byte   // encoded PUSH frames not yet handed to gnet
	outFrames   int       // frames in out
	flushQueued bool      // a Run is queued on the loop
	done        bool      // no more pushes: closing, closed or kicked
	kick        wire.Code // disconnect requested by another goroutine
}

// maxPooledOut is the largest queue buffer returned to Server.outPool.
const maxPooledOut = 256 << 10

func (s *Server) getOut() *[]byte {
	if b, ok := s.outPool.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, 4096)
	return &b
}

func (s *Server) putOut(b *[]byte) {
	if b != nil && cap(*b) <= maxPooledOut {
		*b = (*b)[:0]
		s.outPool.Put(b)
	}
}

// enqueuePush appends a PUSH to the session's queue and makes sure a flush
// is queued on its loop. Any goroutine.
func (ss *session) enqueuePush(id wire.MessageID, flags wire.PushFlags, payload []byte) (bool, error) {
	n := wire.PrefixSize + wire.HeaderSize + len(id) + len(payload)
	ss.mu.Lock()
	if ss.done {
		ss.mu.Unlock()
		return false, nil
	}
	if ss.out != nil && len(*ss.out)+n > ss.s.cfg.OutboundCap {
		ss.s.stats.observeOutbound(int64(len(*ss.out) + n))
		ss.s.putOut(ss.out)
		ss.out = nil
		ss.outFrames = 0
		queue := ss.requestDisconnect(wire.CodeSlowConsumer)
		ss.mu.Unlock()
		if queue {
			_ = ss.l.el.Execute(context.Background(), ss)
		}
		return true, ErrSlowConsumer
	}
	if ss.out == nil {
		ss.out = ss.s.getOut()
	}
	p := wire.Push{ID: id, Flags: flags, Payload: payload}
	b, err := wire.AppendFrame(*ss.out, &p)
	if err != nil {
		ss.mu.Unlock()
		return true, err
	}
	*ss.out = b
	ss.outFrames++
	queue := !ss.flushQueued
	ss.flushQueued = true
	ss.mu.Unlock()
	if queue {
		if err := ss.l.el.Execute(context.Background(), ss); err != nil {
			return false, ErrNotRunning
		}
	}
	return true, nil
}

// requestDisconnect asks the loop to disconnect with code; ss.mu held.
// It reports whether the caller must queue ss on the loop.
func (ss *session) requestDisconnect(code wire.Code) bool {
	if ss.done {
		return false
	}
	ss.done = true
	ss.kick = code
	queue := !ss.flushQueued
	ss.flushQueued = true
	return queue
}

// kickFromAnywhere disconnects the session with code from any goroutine
// (takeover by a newer connection on another loop).
func (ss *session) kickFromAnywhere(code wire.Code) {
	ss.mu.Lock()
	queue := ss.requestDisconnect(code)
	ss.mu.Unlock()
	if queue {
		_ = ss.l.el.Execute(context.Background(), ss)
	}
}

// kickReason is the DISCONNECT reason of a disconnect requested from
// another goroutine.
func kickReason(code wire.Code) string {
	switch code {
	case wire.CodeSuperseded:
		return "superseded by a newer connection of this device"
	case wire.CodeSlowConsumer:
		return "slow consumer: outbound cap exceeded"
	case wire.CodeCredentialRevoked:
		return "credential revoked: the device logged out or is no longer registered"
	case wire.CodeDeviceBlocked:
		return "device blocked by the app"
	case wire.CodeAppDisabled:
		return "app disabled"
	}
	return "disconnected by the server"
}

// Run flushes the queue on the loop (the gnet.Runnable Push queues).
func (ss *session) Run(context.Context) error {
	ss.mu.Lock()
	out, frames, kick := ss.out, ss.outFrames, ss.kick
	ss.out, ss.outFrames, ss.kick, ss.flushQueued = nil, 0, 0, false
	ss.mu.Unlock()
	defer ss.s.putOut(out)
	if ss.state != stateOpen {
		return nil
	}
	if kick != 0 {
		ss.disconnect(kick, 0, kickReason(kick))
		return nil
	}
	if out == nil || len(*out) == 0 {
		return nil
	}
	pending := ss.gc.OutboundBuffered() + len(*out)
	ss.s.stats.observeOutbound(int64(pending))
	if pending > ss.s.cfg.OutboundCap {
		ss.disconnect(wire.CodeSlowConsumer, 0, "slow consumer: outbound cap exceeded")
		return nil
	}
	ss.s.stats.pushes.Add(uint64(frames))
	ss.s.stats.pushBytes.Add(uint64(len(*out)))
	ss.write(*out)
	return nil
}

// traffic handles readable input (gnet's OnTraffic).
func (ss *session) traffic() gnet.Action {
	c := ss.gc
	if ss.state >= stateClosing {
		_, _ = c.Discard(-1)
		return gnet.None
	}
	if ss.need > 0 && c.InboundBuffered() < ss.need {
		return gnet.None
	}
	ss.need = 0
	if ss.state == stateProxy {
		if !ss.readProxy() {
			return ss.after()
		}
	}
	if ss.state == stateHandshake {
		if !ss.readHandshake() {
			return ss.after()
		}
	}
	if ss.noise != nil {
		ss.readEncrypted()
		return ss.after()
	}
	buf, _ := c.Peek(-1)
	n := ss.parse(buf)
	if ss.state < stateClosing && n > 0 {
		_, _ = c.Discard(n) // gnet's Discard(0) would discard everything
	}
	return ss.after()
}

// after discards the input of a connection that is closing and tells
// gnet what to do.
func (ss *session) after() gnet.Action {
	switch ss.state {
	case stateClosing:
		_, _ = ss.gc.Discard(-1)
	case stateClosed:
		return gnet.Close
	}
	return gnet.None
}

// parse handles the whole frames at the start of buf and returns the
// bytes they occupy; it records in ss.need how much input the next frame
// needs when the prefix is known.
func (ss *session) parse(buf []byte) int {
	d := &ss.l.dec
	off := 0
	for ss.state < stateClosing {
		// CONNACK (sent while handling this buffer's CONNECT) changes
		// the maximum for the frames after it.
		max := wire.DefaultMaxFrameSize
		if ss.state == stateOpen {
			max = ss.s.cfg.MaxFrameSize
		}
		if d.MaxFrameSize() != max {
			_ = d.SetMaxFrameSize(max)
		}
		f, n, err := d.Parse(buf[off:])
		if errors.Is(err, wire.ErrIncomplete) {
			if rest := buf[off:]; len(rest) >= wire.PrefixSize {
				// The input gnet must hold before the frame can be
				// whole: on plain TCP the frame itself (gnet keeps rest
				// once the parsed frames are discarded); with Noise the
				// plaintext still missing, a lower bound of the
				// ciphertext missing.
				frame := wire.PrefixSize + int(binary.BigEndian.Uint32(rest))
				// The decoder checks the version and then the type byte
				// as soon as each arrives: until the header is whole,
				// look again at every new byte, so that a bad header is
				// refused whatever the chunking.
				if header := wire.PrefixSize + 2; len(rest) < header {
					frame = len(rest) + 1
				}
				if ss.noise == nil {
					ss.need = frame
				} else {
					ss.need = frame - len(rest)
				}
			}
			break
		}
		if err != nil {
			ss.disconnect(wire.CodeFor(err), 0, truncateReason(err.Error()))
			break
		}
		off += n
		ss.lastSeen = ss.s.now()
		ss.frame(f)
	}
	return off
}

// frame handles one inbound frame.
func (ss *session) frame(f wire.Frame) {
	switch f := f.(type) {
	case *wire.Connect:
		if ss.state != stateConnect {
			ss.disconnect(wire.CodeProtocolError, 0, "CONNECT after CONNACK")
			return
		}
		ss.connect(f)
	case *wire.Ping:
		if ss.state != stateOpen {
			ss.disconnect(wire.CodeProtocolError, 0, "PING before CONNACK")
			return
		}
		ss.ping()
	case *wire.Pong:
		// The server sends no PING, so no PONG can answer one.
		ss.disconnect(wire.CodeProtocolError, 0, "PONG answering no PING")
	case *wire.Ack:
		if ss.state != stateOpen {
			ss.disconnect(wire.CodeProtocolError, 0, "ACK before CONNACK")
			return
		}
		ss.s.h.OnAck(ss.conn, f.IDs)
	case *wire.Opened:
		if ss.state != stateOpen {
			ss.disconnect(wire.CodeProtocolError, 0, "OPENED before CONNACK")
			return
		}
		ss.s.h.OnOpened(ss.conn, f.IDs)
	case *wire.Disconnect:
		ss.recvCode = f.Code
		ss.s.stats.countReceived(f.Code)
		ss.unregister()
		ss.l.el.Close(ss.gc) //nolint:errcheck // closing a closing connection is fine
	default:
		ss.disconnect(wire.CodeProtocolError, 0, f.Type().String()+" from a device")
	}
}

func (ss *session) key() deviceKey { return deviceKey{ss.conn.AppKey, ss.conn.DeviceID} }

// validDeviceID reports whether id uses only [A-Za-z0-9._:-].
func validDeviceID(id string) bool {
	for i := 0; i < len(id); i++ {
		switch b := id[i]; {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9', b == '.', b == '_', b == ':', b == '-':
		default:
			return false
		}
	}
	return true
}

func (ss *session) connect(f *wire.Connect) {
	s := ss.s
	if s.draining.Load() {
		ss.disconnect(wire.CodeServerShutdown, s.shutdownRetry(), "server shutting down")
		return
	}
	if !validDeviceID(f.DeviceID) {
		ss.disconnect(wire.CodeMalformedFrame, 0, "device_id must be [A-Za-z0-9._:-]")
		return
	}
	if err := s.auth.Authenticate(f.AppKey, f.DeviceID, f.Credential, time.Now()); err != nil {
		reason, retry := "authentication failed", time.Duration(0)
		var ae *AuthError
		if errors.As(err, &ae) {
			reason, retry = ae.Reason, min(max(ae.RetryAfter, 0), wire.MaxMillis*time.Millisecond)
		}
		ss.disconnect(wire.CodeFor(err), retry, truncateReason(reason))
		return
	}
	if it, ok := s.auth.(IssueTimes); ok {
		ss.conn.IssuedAt, _ = it.IssuedAt(f.Credential)
	}
	hb := s.hb.Load()
	ss.hbVersion = hb.version
	ss.idle = s.ticks(hb.hb.IdleTimeout)
	ss.conn.AppKey, ss.conn.DeviceID, ss.conn.SDKVersion = f.AppKey, f.DeviceID, f.SDKVersion
	ss.state = stateOpen
	// Register before CONNACK, so a Push made as soon as the device has
	// CONNACK finds it. Pushes are written by tasks on this loop, which
	// run after this call: they cannot overtake CONNACK.
	ss.registered = true
	s.stats.online.Add(1)
	if old := s.reg.put(ss.key(), ss); old != nil {
		old.kickFromAnywhere(wire.CodeSuperseded)
	}
	ss.writeFrame(&wire.Connack{Heartbeat: hb.hb, ServerTime: time.Now(), MaxFrameSize: s.cfg.MaxFrameSize})
	if ss.state != stateOpen { // the write failed and gnet closed the socket
		return
	}
	ss.reschedule()
	ss.authed = true
	s.h.OnConnect(ss.conn, f.LastAcked)
}

// ping answers a device's PING, with new heartbeat values if they changed
// since the connection last got them.
func (ss *session) ping() {
	if ss.nextIdle != 0 {
		ss.idle, ss.nextIdle = ss.nextIdle, 0
		ss.reschedule()
	}
	hb := ss.s.hb.Load()
	if hb.version == ss.hbVersion {
		ss.writeFrame(&wire.Pong{})
		return
	}
	ss.hbVersion = hb.version
	ss.nextIdle = ss.s.ticks(hb.hb.IdleTimeout)
	ss.idle = max(ss.idle, ss.nextIdle)
	ss.writeFrame(&wire.Pong{Update: hb.hb})
}

// writeFrame encodes f into the loop's scratch buffer and writes it. A
// device that sends PINGs but never reads would grow the output without
// bound: past the outbound cap it is disconnected instead (the DISCONNECT
// itself is always written).
func (ss *session) writeFrame(f wire.Frame) {
	if _, last := f.(*wire.Disconnect); !last && ss.gc.OutboundBuffered() > ss.s.cfg.OutboundCap {
		ss.disconnect(wire.CodeSlowConsumer, 0, "slow consumer: outbound cap exceeded")
		return
	}
	b, err := wire.AppendFrame(ss.l.scratch[:0], f)
	if err != nil {
		ss.s.log.Error("gateway: encoding a frame", "type", f.Type(), "err", err)
		return
	}
	ss.l.scratch = b
	ss.write(b)
}

// write hands bytes to gnet (encrypting them first on a Noise
// connection). gnet copies what the socket does not take at once.
func (ss *session) write(b []byte) {
	if ss.state == stateClosed {
		return
	}
	if ss.noise != nil {
		enc, err := appendEncrypted(ss.l.cipher[:0], ss.noise.tx, b)
		if err != nil {
			ss.s.log.Error("gateway: noise encrypt", "err", err)
			ss.l.el.Close(ss.gc) //nolint:errcheck
			return
		}
		ss.l.cipher = enc
		b = enc
	}
	_, _ = ss.gc.Write(b) // on error gnet closes the connection (OnClose)
}

// disconnect sends DISCONNECT and starts closing: no more frames are
// read or written, the output drains, writing is shut down, and the
// socket closes when the device closes or after Config.CloseTimeout.
func (ss *session) disconnect(code wire.Code, retryAfter time.Duration, reason string) {
	if ss.state >= stateClosing {
		return
	}
	if ss.state == stateProxy || ss.state == stateHandshake {
		// The peer is a load balancer or has no cipher yet: nothing to
		// tell it in the protocol.
		ss.l.el.Close(ss.gc) //nolint:errcheck
		return
	}
	ss.writeFrame(&wire.Disconnect{Code: code, RetryAfter: retryAfter, Reason: reason})
	if ss.state == stateClosed {
		return
	}
	ss.sentCode = code
	ss.s.stats.countSent(code)
	ss.unregister()
	ss.state = stateClosing
	ss.closeAt = ss.s.now() + ss.s.ticks(ss.s.cfg.CloseTimeout)
	ss.pendingShut = true
	ss.shutWhenDrained()
	ss.reschedule()
}

// shutWhenDrained half-closes the socket once gnet wrote all output, so
// the device reads the DISCONNECT and then EOF (closing at once could
// reset the connection and lose the frame).
func (ss *session) shutWhenDrained() {
	if ss.pendingShut && ss.gc.OutboundBuffered() == 0 {
		ss.pendingShut = false
		_ = unix.Shutdown(ss.gc.Fd(), unix.SHUT_WR)
	}
}

// unregister takes the session out of the registry and stops Push.
func (ss *session) unregister() {
	ss.mu.Lock()
	ss.done = true
	out := ss.out
	ss.out, ss.outFrames = nil, 0
	ss.mu.Unlock()
	ss.s.putOut(out)
	if ss.registered {
		ss.registered = false
		ss.s.reg.remove(ss.key(), ss)
		ss.s.stats.online.Add(-1)
	}
}

// deadline is the tick at which timer must look at the session again.
func (ss *session) deadline() int64 {
	// lastSeen and opened are the tick a frame or the socket came in,
	// rounded down; one tick more keeps a timeout from firing early (it
	// fires up to a tick late, as the configuration says).
	switch ss.state {
	case stateOpen:
		return ss.lastSeen + ss.idle + 1
	case stateClosing:
		if ss.pendingShut {
			return ss.s.now() + 1
		}
		return ss.closeAt
	default:
		return ss.opened + ss.s.ticks(ss.s.cfg.ConnectTimeout) + 1
	}
}

// reschedule moves the session to the slot of its deadline, for when the
// deadline moved earlier (the wheel only moves deadlines later lazily).
func (ss *session) reschedule() {
	ss.l.wheel.remove(ss)
	ss.l.wheel.add(ss, ss.deadline())
}

// timer runs when the wheel reaches the session's slot.
func (ss *session) timer(now int64) {
	switch ss.state {
	case stateClosed:
		return
	case stateClosing:
		ss.shutWhenDrained()
		if now >= ss.closeAt {
			ss.l.el.Close(ss.gc) //nolint:errcheck
			return
		}
	case stateOpen:
		if now >= ss.deadline() {
			ss.disconnect(wire.CodeIdleTimeout, 0, "idle timeout")
			return
		}
	default:
		if now >= ss.deadline() {
			ss.disconnect(wire.CodeConnectTimeout, 0, "no CONNECT within the connect timeout")
			return
		}
	}
	ss.l.wheel.add(ss, ss.deadline())
}

// closed runs when gnet closed the socket (OnClose).
func (ss *session) closed() {
	s := ss.s
	ss.state = stateClosed
	ss.l.wheel.remove(ss)
	ss.unregister()
	s.stats.connections.Add(-1)
	if ss.sentCode == 0 && ss.recvCode == 0 {
		s.stats.lost.Add(1)
	}
	ss.noise = nil
	if ss.authed {
		d := Disconnect{Code: ss.sentCode}
		if ss.recvCode != 0 {
			d = Disconnect{Code: ss.recvCode, ByDevice: true}
		}
		s.h.OnDisconnect(ss.conn, d)
	}
	s.checkDrained()
}

func truncateReason(s string) string {
	if len(s) <= wire.MaxReasonLen {
		return s
	}
	s = s[:wire.MaxReasonLen]
	for len(s) > 0 && s[len(s)-1]&0xc0 == 0x80 { // cut at a rune boundary
		s = s[:len(s)-1]
	}
	if len(s) > 0 && s[len(s)-1] >= 0xc0 {
		s = s[:len(s)-1]
	}
	return s
}
