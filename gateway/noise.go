package gateway

import (
	"encoding/binary"

	"github.com/flynn/noise"

	"github.com/pushledger/pushledger/gateway/noiseconn"
)

// noiseState is a connection's Noise transport.
type noiseState struct {
	rx, tx *noise.CipherState
	plain  []byte // decrypted input not yet parsed
}

// noiseServer holds the gateway's static Noise key.
type noiseServer struct {
	priv []byte
}

func newNoiseServer(priv []byte) (*noiseServer, error) {
	if _, err := noiseconn.PublicKey(priv); err != nil {
		return nil, err
	}
	return &noiseServer{priv: append([]byte(nil), priv...)}, nil
}

// NoisePublicKey returns the public key devices pin for a Config.NoiseKey.
func NoisePublicKey(priv []byte) ([]byte, error) { return noiseconn.PublicKey(priv) }

// readHandshake runs the responder's side of the Noise_NK handshake:
// read message 1, answer message 2, keep the transport ciphers. It
// reports whether the handshake is complete; a bad message closes the
// connection.
func (ss *session) readHandshake() bool {
	c := ss.gc
	buf, _ := c.Peek(-1)
	if len(buf) < 2 {
		return false
	}
	n := int(binary.BigEndian.Uint16(buf))
	if n != noiseconn.HandshakeSize {
		ss.l.el.Close(c) //nolint:errcheck
		return false
	}
	if len(buf) < 2+n {
		ss.need = 2 + n
		return false
	}
	hs, err := noiseconn.NewResponder(ss.s.noise.priv)
	if err == nil {
		_, _, _, err = hs.ReadMessage(nil, buf[2:2+n])
	}
	var msg []byte
	var rx, tx *noise.CipherState
	if err == nil {
		msg, rx, tx, err = hs.WriteMessage(binary.BigEndian.AppendUint16(ss.l.scratch[:0], noiseconn.HandshakeSize), nil)
	}
	if err != nil || rx == nil || tx == nil {
		ss.s.log.Debug("gateway: noise handshake failed", "err", err)
		ss.l.el.Close(c) //nolint:errcheck
		return false
	}
	_, _ = c.Discard(2 + n)
	ss.l.scratch = msg
	_, _ = c.Write(msg)
	ss.noise = &noiseState{rx: rx, tx: tx}
	ss.state = stateConnect
	return true
}

// readEncrypted decrypts the whole transport messages buffered in gnet,
// one at a time, parsing the frames of each before decrypting the next,
// so the plaintext buffer stays below a frame plus one message.
func (ss *session) readEncrypted() {
	c := ss.gc
	for ss.state < stateClosing {
		hdr, err := c.Peek(2)
		if err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(hdr))
		if n < noiseconn.TagSize {
			ss.l.el.Close(c) //nolint:errcheck
			return
		}
		msg, err := c.Peek(2 + n)
		if err != nil {
			ss.need = 2 + n
			return
		}
		ns := ss.noise
		out, err := ns.rx.Decrypt(ns.plain, nil, msg[2:])
		_, _ = c.Discard(2 + n)
		if err != nil {
			ss.s.log.Debug("gateway: noise decrypt failed", "err", err)
			ss.l.el.Close(c) //nolint:errcheck
			return
		}
		used := ss.parse(out)
		rest := copy(out, out[used:])
		ns.plain = out[:rest]
		if cap(ns.plain) > 64<<10 && rest == 0 {
			ns.plain = nil
		}
	}
}

// appendEncrypted encrypts b as transport messages appended to dst.
func appendEncrypted(dst []byte, tx *noise.CipherState, b []byte) ([]byte, error) {
	return noiseconn.AppendMessages(dst, tx, b)
}
