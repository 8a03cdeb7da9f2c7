package gateway

import (
	"net/netip"

	"github.com/pushledger/pushledger/gateway/wire"
)

// Handler receives the events of authenticated device connections; the
// embedding platform implements it (recording deliveries and opens in the
// ledger, redelivering what a device has not acknowledged).
//
// Contract:
//   - Methods run on the connection's event loop, which serves thousands
//     of other connections: they must not block. Hand work to a queue or
//     a goroutine of your own.
//   - Events of one connection arrive in order: OnConnect, then any
//     OnAck and OnOpened, then exactly one OnDisconnect.
//   - Events of different connections, even of the same device, are not
//     ordered: after a takeover the new connection's OnConnect may come
//     before the old one's OnDisconnect. Conn.ID tells them apart.
//   - ids alias a decoder's buffer and are valid only during the call;
//     copy them to keep them.
type Handler interface {
	// OnConnect: the device authenticated and CONNACK is sent; from now on
	// Push reaches it. lastAcked is the CONNECT's last_acked (zero if
	// none): count it as delivered, the ACK that carried it may be lost.
	OnConnect(c Conn, lastAcked wire.MessageID)
	// OnAck: the device stored these messages (ids may repeat or be
	// unknown; ignore those).
	OnAck(c Conn, ids []wire.MessageID)
	// OnOpened: the user opened these messages on the device (implies
	// delivery).
	OnOpened(c Conn, ids []wire.MessageID)
	// OnDisconnect: the connection that OnConnect announced is closed.
	OnDisconnect(c Conn, d Disconnect)
}

// Conn identifies one authenticated connection of a device.
type Conn struct {
	AppKey   string
	DeviceID string
	// ID is unique among the connections of this Server.
	ID uint64
	// SDKVersion is the CONNECT's sdk_version.
	SDKVersion string
	// Remote is the device's address: from the PROXY header when
	// Config.ProxyProtocol is on, else the TCP peer.
	Remote netip.AddrPort
	// IssuedAt is when the device's credential was issued (unix seconds),
	// when the Authenticator tells (IssueTimes); 0 otherwise.
	IssuedAt int64
}

// Disconnect says how a connection ended.
type Disconnect struct {
	// Code is the DISCONNECT code the server sent or, when ByDevice, the
	// one the device sent; 0 when the connection was lost without a
	// DISCONNECT either way (TCP reset or close).
	Code wire.Code
	// ByDevice reports that the device sent the DISCONNECT.
	ByDevice bool
}

// NopHandler ignores every event.
type NopHandler struct{}

func (NopHandler) OnConnect(Conn, wire.MessageID)  {}
func (NopHandler) OnAck(Conn, []wire.MessageID)    {}
func (NopHandler) OnOpened(Conn, []wire.MessageID) {}
func (NopHandler) OnDisconnect(Conn, Disconnect)   {}

var _ Handler = NopHandler{}
