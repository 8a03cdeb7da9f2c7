package noiseconn_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"

	"github.com/pushledger/pushledger/gateway/noiseconn"
)

// responder runs the server's side on c: the handshake, then it echoes
// every transport message's plaintext back, re-chunked by AppendMessages.
func responder(c net.Conn, priv []byte) error {
	hs, err := noiseconn.NewResponder(priv)
	if err != nil {
		return err
	}
	msg := make([]byte, 2+noiseconn.HandshakeSize)
	if _, err := io.ReadFull(c, msg); err != nil {
		return err
	}
	if _, _, _, err := hs.ReadMessage(nil, msg[2:]); err != nil {
		return err
	}
	out, rx, tx, err := hs.WriteMessage(binary.BigEndian.AppendUint16(nil, noiseconn.HandshakeSize), nil)
	if err != nil {
		return err
	}
	if _, err := c.Write(out); err != nil {
		return err
	}
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return nil
		}
		ct := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(c, ct); err != nil {
			return err
		}
		pt, err := rx.Decrypt(nil, nil, ct)
		if err != nil {
			return err
		}
		echo, err := noiseconn.AppendMessages(nil, tx, pt)
		if err != nil {
			return err
		}
		if _, err := c.Write(echo); err != nil {
			return err
		}
	}
}

func TestRoundTrip(t *testing.T) {
	priv, pub, err := noiseconn.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if derived, _ := noiseconn.PublicKey(priv); !bytes.Equal(derived, pub) {
		t.Fatal("PublicKey does not match GenerateKey")
	}
	a, b := net.Pipe()
	defer a.Close()
	errc := make(chan error, 1)
	go func() { errc <- responder(b, priv); b.Close() }()
	c, err := noiseconn.Client(a, pub)
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 3*noiseconn.MaxPlaintext+5) // four messages
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	go func() { _, _ = c.Write(msg) }()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("echo differs")
	}
	a.Close()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestWrongServerKey(t *testing.T) {
	priv, _, _ := noiseconn.GenerateKey(nil)
	_, otherPub, _ := noiseconn.GenerateKey(nil)
	a, b := net.Pipe()
	errc := make(chan error, 1)
	go func() { errc <- responder(b, priv); b.Close() }()
	if _, err := noiseconn.Client(a, otherPub); err == nil {
		t.Fatal("handshake with the wrong pinned key succeeded")
	}
	if err := <-errc; err == nil {
		t.Fatal("responder accepted a handshake for another key")
	}
}
