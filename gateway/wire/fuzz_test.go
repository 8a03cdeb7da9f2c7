package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/pushledger/pushledger/gateway/wire"
)

// FuzzParse feeds arbitrary bytes to the decoder, whole and in chunks
// (the second input gives the chunk sizes: each byte b is a chunk of b+1
// bytes, in turn), and checks that
//
//   - it never panics, and every error but ErrIncomplete is a *FrameError
//     whose code forbids reconnecting;
//   - every frame it accepts is canonical: encoding the frames again gives
//     back exactly the bytes they were decoded from;
//   - each frame decodes alike from exactly its declared bytes with no
//     spare capacity (nothing beyond the declared length is read);
//   - Parse, Decoder.Parse, chunked delivery to a Decoder and a Reader over
//     a chunked stream yield the same frames and the same final error;
//   - Parse allocates no more than the bytes it was given (plus a small
//     constant for an error), whatever lengths and counts they claim.
func FuzzParse(f *testing.F) {
	cutss := [][]byte{nil, {0}, {1}, {2, 0, 6}, {3, 11}, {255}}
	var all []byte
	for _, fr := range examples()[:8] {
		enc := mustAppend(f, nil, fr)
		all = append(all, enc...)
		for _, cuts := range cutss {
			f.Add(enc, cuts)
		}
		f.Add(enc[:len(enc)-1], []byte{4})
		f.Add(append(bytes.Clone(enc), enc[:7]...), []byte{5})
	}
	for _, cuts := range cutss {
		f.Add(all, cuts)
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1, 1, 0}, []byte{0})
	f.Add([]byte{0, 0, 0, 3, 2, 3, 0}, []byte{0})
	f.Add([]byte{0, 0, 0, 3, 1, 9, 0}, []byte{1})
	f.Add([]byte{0, 0, 0, 21, 1, 6, 0, 0xff, 0xff}, []byte{0})

	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		if len(cuts) == 0 {
			cuts = []byte{0}
		}
		next := func() func() int {
			sizes := make([]int, len(cuts))
			for i, c := range cuts {
				sizes[i] = int(c) + 1
			}
			return cycle(sizes)
		}

		var d wire.Decoder
		frames, rest, err := decodeAll(&d, data)
		if err != wire.ErrIncomplete {
			var fe *wire.FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) is not a *FrameError", err, err)
			}
			if c := wire.CodeFor(err); !c.Valid() || c.Reconnect() {
				t.Fatalf("CodeFor(%v) = %v", err, c)
			}
		}

		// Canonical, and bounded by the declared length.
		consumed := data[:len(data)-rest]
		var again []byte
		for _, fr := range frames {
			off := len(again)
			var err error
			if again, err = wire.AppendFrame(again, fr); err != nil {
				t.Fatalf("decoded %s does not encode: %v", describe(fr), err)
			}
			n := len(again) - off
			if !bytes.Equal(again[off:], consumed[off:min(off+n, len(consumed))]) {
				t.Fatalf("%s decoded from non-canonical bytes % x", describe(fr), consumed[off:min(off+n, len(consumed))])
			}
			if declared := int(binary.BigEndian.Uint32(consumed[off:])); declared+wire.PrefixSize != n {
				t.Fatalf("frame size %d, length field %d", n, declared)
			}
			exact := consumed[off : off+n : off+n]
			if g, gn, gerr := wire.Parse(exact); gerr != nil || gn != n || !equal(g, fr) {
				t.Fatalf("Parse of the frame's own bytes = %s, %d, %v", describe(g), gn, gerr)
			}
		}
		if len(again) != len(consumed) {
			t.Fatalf("frames re-encode to %d bytes, decoded from %d", len(again), len(consumed))
		}

		// The package function and chunked deliveries agree.
		var pframes []wire.Frame
		pdata := data
		for {
			g, n, perr := wire.Parse(pdata)
			if perr != nil {
				if !sameError(perr, err) || len(pdata) != rest {
					t.Fatalf("Parse: %v with %d left; Decoder: %v with %d left", perr, len(pdata), err, rest)
				}
				break
			}
			pframes = append(pframes, g)
			pdata = pdata[n:]
		}
		sameFrames(t, "Parse", pframes, frames)

		cframes, crest, cerr := decodeChunked(&wire.Decoder{}, data, next())
		sameFrames(t, "chunked", cframes, frames)
		if crest != rest || !sameError(cerr, err) {
			t.Fatalf("chunked: %v with %d left; whole: %v with %d left", cerr, crest, err, rest)
		}

		r := wire.NewReader(&chunkReader{data: data, next: next()})
		var rframes []wire.Frame
		var rerr error
		for {
			var fr wire.Frame
			if fr, rerr = r.ReadFrame(); rerr != nil {
				break
			}
			rframes = append(rframes, wire.Clone(fr))
		}
		sameFrames(t, "Reader", rframes, frames)
		switch {
		case err == wire.ErrIncomplete && rest == 0:
			if rerr != io.EOF {
				t.Fatalf("Reader: %v; want io.EOF", rerr)
			}
		case err == wire.ErrIncomplete:
			if rerr != io.ErrUnexpectedEOF {
				t.Fatalf("Reader: %v; want io.ErrUnexpectedEOF", rerr)
			}
		case !sameError(rerr, err):
			t.Fatalf("Reader: %v; Decoder: %v", rerr, err)
		}

		// Allocation bound of one Parse.
		const slack = 1024 // a *FrameError, its message, fmt's state
		for try := 0; ; try++ {
			a := allocated(func() { _, _, _ = wire.Parse(data) })
			if a <= uint64(len(data))+slack {
				break
			}
			if try == 2 {
				t.Fatalf("Parse of %d bytes allocated %d bytes", len(data), a)
			}
		}
	})
}

func sameFrames(t *testing.T, name string, got, want []wire.Frame) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d frames; want %d", name, len(got), len(want))
	}
	for i := range got {
		if !equal(got[i], want[i]) {
			t.Fatalf("%s: frame %d = %s; want %s", name, i, describe(got[i]), describe(want[i]))
		}
	}
}
