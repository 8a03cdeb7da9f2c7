package wire_test

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/pushledger/pushledger/gateway/wire"
)

func TestReaderOneByteAtATime(t *testing.T) {
	var stream []byte
	frames := examples()
	for _, f := range frames {
		stream = mustAppend(t, stream, f)
	}
	for name, r := range map[string]io.Reader{
		"one byte":   iotest.OneByteReader(bytes.NewReader(stream)),
		"half":       iotest.HalfReader(bytes.NewReader(stream)),
		"data + EOF": iotest.DataErrReader(bytes.NewReader(stream)),
		"whole":      bytes.NewReader(stream),
	} {
		fr := wire.NewReader(r)
		for i, want := range frames {
			got, err := fr.ReadFrame()
			if err != nil || !equal(got, want) {
				t.Fatalf("%s: frame %d = %s, %v; want %s", name, i, describe(got), err, describe(want))
			}
		}
		if _, err := fr.ReadFrame(); err != io.EOF {
			t.Fatalf("%s: at the end: %v; want io.EOF", name, err)
		}
	}
}

func TestReaderEndings(t *testing.T) {
	enc := mustAppend(t, nil, exPush)
	r := wire.NewReader(bytes.NewReader(enc[:len(enc)-1]))
	if _, err := r.ReadFrame(); err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated frame: %v", err)
	}
	boom := errors.New("boom")
	r = wire.NewReader(iotest.ErrReader(boom))
	if _, err := r.ReadFrame(); err != boom {
		t.Fatalf("read error: %v", err)
	}
	r = wire.NewReader(bytes.NewReader(append(mustAppend(t, nil, exPing), 0, 0, 0, 3, 2, 3, 0)))
	if f, err := r.ReadFrame(); err != nil || f.Type() != wire.TypePing {
		t.Fatalf("first frame: %v %v", f, err)
	}
	_, err := r.ReadFrame()
	if !errors.Is(err, wire.ErrUnsupportedVersion) {
		t.Fatalf("bad version: %v", err)
	}
	if _, again := r.ReadFrame(); again != err {
		t.Fatalf("decoding errors are sticky: %v", again)
	}
	if _, err := wire.NewReader(zeroReader{}).ReadFrame(); err != io.ErrNoProgress {
		t.Fatalf("reader without progress: %v", err)
	}
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

// endless is a peer that announces a huge frame and then never stops.
type endless struct{ n int }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		if e.n < 4 {
			p[i] = 0x7f // length 0x7f7f7f7f
		} else {
			p[i] = 0xab
		}
		e.n++
	}
	return len(p), nil
}

// A Reader rejects an oversized frame from its prefix and never buffers
// more than PrefixSize + MaxFrameSize, even for a frame that is allowed.
func TestReaderBoundedBuffer(t *testing.T) {
	src := &endless{}
	var err error
	if a := allocated(func() { _, err = wire.NewReader(src).ReadFrame() }); a > 16<<10 {
		t.Errorf("allocated %d bytes for a frame it rejects", a)
	}
	if !errors.Is(err, wire.ErrFrameTooLarge) || src.n > 4096 {
		t.Fatalf("%v after reading %d bytes", err, src.n)
	}

	big := mustAppend(t, nil, &wire.Push{Payload: make([]byte, 1<<20)})
	r := wire.NewReader(io.MultiReader(bytes.NewReader(big), bytes.NewReader(big)))
	if err := r.SetMaxFrameSize(2 << 20); err != nil {
		t.Fatal(err)
	}
	var frames int
	a := allocated(func() {
		for {
			if _, err = r.ReadFrame(); err != nil {
				break
			}
			frames++
		}
	})
	if err != io.EOF || frames != 2 {
		t.Fatalf("%d frames, %v", frames, err)
	}
	if limit := uint64(len(big)) + 64<<10; a > limit {
		t.Errorf("allocated %d bytes to read two frames of %d", a, len(big))
	}
}
