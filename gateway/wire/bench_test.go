package wire_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/pushledger/pushledger/gateway/wire"
)

// Payload sizes: a short notification, a typical one, and the REST API's
// limit of 4 096 bytes of content (plus JSON framing).
var benchPayloads = []int{64, 512, 4096 + 128}

func benchPush(size int) *wire.Push {
	return &wire.Push{ID: exPush.ID, Flags: wire.PushHighPriority, Payload: bytes.Repeat([]byte("x"), size)}
}

func reportFrames(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
}

func BenchmarkAppendPush(b *testing.B) {
	for _, size := range benchPayloads {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			p := benchPush(size)
			buf := make([]byte, 0, size+64)
			b.SetBytes(int64(size + 23))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = wire.AppendFrame(buf[:0], p); err != nil {
					b.Fatal(err)
				}
			}
			reportFrames(b)
		})
	}
}

func BenchmarkParsePush(b *testing.B) {
	for _, size := range benchPayloads {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			enc := mustAppend(b, nil, benchPush(size))
			var d wire.Decoder
			b.SetBytes(int64(len(enc)))
			b.ReportAllocs()
			for b.Loop() {
				f, n, err := d.Parse(enc)
				if err != nil || n != len(enc) || len(f.(*wire.Push).Payload) != size {
					b.Fatal(err)
				}
			}
			reportFrames(b)
		})
	}
}
