// Package noiseconn is the gateway's transport encryption: a Noise_NK
// handshake (the device knows the server's static public key, pinned in
// the app; the device itself is authenticated later by its CONNECT
// credential) followed by a stream of length-prefixed Noise transport
// messages that carry the protocol's frames unchanged
// (docs/gateway-protocol.md, "Transport security").
//
// On the wire:
//
//	handshake   client: u16 len, Noise message 1 (-> e, es)   48 bytes with an empty payload
//	            server: u16 len, Noise message 2 (<- e, ee)   48 bytes with an empty payload
//	transport   each way: u16 len, ciphertext (at most 65 535 bytes: up
//	            to 65 519 plaintext bytes plus a 16-byte tag)
//
// The protocol name is Noise_NK_25519_ChaChaPoly_SHA256 with the prologue
// "pushledger-gateway/1". The gateway uses NewResponder and AppendMessages
// on its event loops; a Go client wraps its net.Conn with Client.
package noiseconn

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/flynn/noise"
	"golang.org/x/crypto/curve25519"
)

const (
	// Prologue binds the handshake to this protocol.
	Prologue = "pushledger-gateway/1"
	// MaxMessage is the largest Noise message (length prefix excluded).
	MaxMessage = 65535
	// TagSize is the size of the authentication tag of each message.
	TagSize = 16
	// MaxPlaintext is the most plaintext one transport message carries.
	MaxPlaintext = MaxMessage - TagSize
	// HandshakeSize is the size of either handshake message (with an
	// empty payload, which is all this protocol sends in them).
	HandshakeSize = 48
	// KeySize is the size of X25519 private and public keys.
	KeySize = 32
)

// ErrHandshake reports a failed handshake: a wrong server key, a corrupt
// or unexpected message.
var ErrHandshake = errors.New("noiseconn: handshake failed")

func suite() noise.CipherSuite {
	return noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashSHA256)
}

// GenerateKey returns a new static key pair for a gateway; r nil means
// crypto/rand.
func GenerateKey(r io.Reader) (priv, pub []byte, err error) {
	if r == nil {
		r = rand.Reader
	}
	k, err := suite().GenerateKeypair(r)
	if err != nil {
		return nil, nil, err
	}
	return k.Private, k.Public, nil
}

// PublicKey returns the public key of a private key.
func PublicKey(priv []byte) ([]byte, error) {
	if len(priv) != KeySize {
		return nil, fmt.Errorf("noiseconn: private key has %d bytes, want %d", len(priv), KeySize)
	}
	return curve25519.X25519(priv, curve25519.Basepoint)
}

// NewResponder returns the server's handshake state for one connection.
func NewResponder(priv []byte) (*noise.HandshakeState, error) {
	pub, err := PublicKey(priv)
	if err != nil {
		return nil, err
	}
	return noise.NewHandshakeState(noise.Config{
		CipherSuite:   suite(),
		Random:        rand.Reader,
		Pattern:       noise.HandshakeNK,
		Prologue:      []byte(Prologue),
		StaticKeypair: noise.DHKey{Private: priv, Public: pub},
	})
}

// NewInitiator returns the client's handshake state, pinning the server's
// public key.
func NewInitiator(serverPub []byte) (*noise.HandshakeState, error) {
	if len(serverPub) != KeySize {
		return nil, fmt.Errorf("noiseconn: server public key has %d bytes, want %d", len(serverPub), KeySize)
	}
	return noise.NewHandshakeState(noise.Config{
		CipherSuite: suite(),
		Random:      rand.Reader,
		Pattern:     noise.HandshakeNK,
		Initiator:   true,
		Prologue:    []byte(Prologue),
		PeerStatic:  serverPub,
	})
}

// AppendMessages encrypts plaintext with cs as one or more transport
// messages (each a u16 length and at most MaxPlaintext bytes of
// plaintext) appended to dst. cs is not safe for concurrent use.
func AppendMessages(dst []byte, cs *noise.CipherState, plaintext []byte) ([]byte, error) {
	for len(plaintext) > 0 {
		chunk := plaintext[:min(len(plaintext), MaxPlaintext)]
		plaintext = plaintext[len(chunk):]
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(chunk)+TagSize))
		var err error
		if dst, err = cs.Encrypt(dst, nil, chunk); err != nil {
			return nil, err
		}
	}
	return dst, nil
}

// Conn is a net.Conn whose bytes travel in Noise transport messages.
// Read and Write are each safe for one goroutine at a time, and may run
// concurrently with each other.
type Conn struct {
	net.Conn
	rmu   sync.Mutex
	rx    *noise.CipherState
	rbuf  []byte // ciphertext read buffer
	pbuf  []byte // backing of plain
	plain []byte // decrypted, not yet returned
	wmu   sync.Mutex
	tx    *noise.CipherState
	wbuf  []byte
}

// Client runs the initiator's handshake on c (respecting c's deadlines)
// and returns the encrypted connection. A server that does not hold the
// private key of serverPub fails the handshake with ErrHandshake.
func Client(c net.Conn, serverPub []byte) (*Conn, error) {
	hs, err := NewInitiator(serverPub)
	if err != nil {
		return nil, err
	}
	msg, _, _, err := hs.WriteMessage(binary.BigEndian.AppendUint16(nil, HandshakeSize), nil)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint16(hdr[:])
	if n != HandshakeSize {
		return nil, fmt.Errorf("%w: server message of %d bytes", ErrHandshake, n)
	}
	msg2 := make([]byte, n)
	if _, err := io.ReadFull(c, msg2); err != nil {
		return nil, err
	}
	_, tx, rx, err := hs.ReadMessage(nil, msg2)
	if err != nil || tx == nil || rx == nil {
		return nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	return &Conn{Conn: c, rx: rx, tx: tx}, nil
}

// Read returns decrypted bytes; a message that fails authentication is
// an error (the connection is then useless).
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for len(c.plain) == 0 {
		var hdr [2]byte
		if _, err := io.ReadFull(c.Conn, hdr[:]); err != nil {
			return 0, err
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		if n < TagSize {
			return 0, fmt.Errorf("noiseconn: message of %d bytes", n)
		}
		if cap(c.rbuf) < n {
			c.rbuf = make([]byte, n)
		}
		if _, err := io.ReadFull(c.Conn, c.rbuf[:n]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		out, err := c.rx.Decrypt(c.pbuf[:0], nil, c.rbuf[:n])
		if err != nil {
			return 0, fmt.Errorf("noiseconn: decrypt: %w", err)
		}
		c.pbuf, c.plain = out, out
	}
	n := copy(p, c.plain)
	c.plain = c.plain[n:]
	return n, nil
}

// Write encrypts p as one or more messages and writes them at once.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b, err := AppendMessages(c.wbuf[:0], c.tx, p)
	if err != nil {
		return 0, err
	}
	c.wbuf = b
	if _, err := c.Conn.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}
