package gateway

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"net"

	"github.com/pires/go-proxyproto"
)

// proxyV2Sig is the 12-byte signature that starts a PROXY protocol v2
// header; bytes 14..15 of the header hold the length of the rest.
const proxyV2Sig = "\r\n\r\n\x00\r\nQUIT\n"

// maxProxyHeader bounds the PROXY header the gateway accepts (16 fixed
// bytes plus addresses and TLVs).
const maxProxyHeader = 16 + 4096

// readProxy consumes the PROXY protocol v2 header at the start of the
// connection. It reports whether the header is consumed; on a missing or
// invalid header it closes the connection (the peer is a load balancer
// that is misconfigured, or not a load balancer at all).
func (ss *session) readProxy() bool {
	c := ss.gc
	buf, _ := c.Peek(-1)
	if len(buf) < 16 {
		if proxyV2Sig[:min(len(buf), 12)] != string(buf[:min(len(buf), 12)]) {
			ss.l.el.Close(c) //nolint:errcheck
		}
		return false
	}
	total := 16 + int(binary.BigEndian.Uint16(buf[14:16]))
	if string(buf[:12]) != proxyV2Sig || total > maxProxyHeader {
		ss.l.el.Close(c) //nolint:errcheck
		return false
	}
	if len(buf) < total {
		ss.need = total
		return false
	}
	h, err := proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(buf[:total]), total))
	if err != nil {
		ss.s.log.Debug("gateway: invalid PROXY header", "err", err)
		ss.l.el.Close(c) //nolint:errcheck
		return false
	}
	if h.Command.IsProxy() {
		if src, ok := h.SourceAddr.(*net.TCPAddr); ok {
			ss.conn.Remote = src.AddrPort()
		}
	}
	_, _ = c.Discard(total)
	ss.state = stateConnect
	if ss.s.noise != nil {
		ss.state = stateHandshake
	}
	return true
}
