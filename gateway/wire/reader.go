package wire

import (
	"encoding/binary"
	"errors"
	"io"
)

// readerMinBuf is a Reader's first buffer size: room for many small
// frames per read.
const readerMinBuf = 4096

// Reader reads frames from an io.Reader, such as the net.Conn of a device
// SDK. It buffers what it reads and grows its buffer only to hold the
// frame at hand, so it never holds more than PrefixSize+MaxFrameSize
// bytes (or readerMinBuf, 4 KiB, if larger), whatever the length prefix
// announces: an oversized prefix fails with ErrFrameTooLarge before a byte
// of its body is buffered.
//
// A Reader is not safe for concurrent use.
type Reader struct {
	r          io.Reader
	d          Decoder
	buf        []byte // len(buf) == cap(buf); buf[start:end] is unparsed
	start, end int
	rerr       error // error of the last Read, returned once buf is used up
	err        error // sticky decoding error
}

// NewReader returns a Reader of r with DefaultMaxFrameSize.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// SetMaxFrameSize sets the largest frame size accepted from now on, as
// Decoder.SetMaxFrameSize.
func (r *Reader) SetMaxFrameSize(n uint32) error { return r.d.SetMaxFrameSize(n) }

// ReadFrame reads the next frame. It returns io.EOF when the stream ends
// between frames, io.ErrUnexpectedEOF when it ends inside one, the
// Read error otherwise, and the decoding errors of Decoder.Parse (final:
// every later call returns the same error).
//
// Buffer lifetime: the frame and everything it points to (payload,
// credential, ids) are valid until the next ReadFrame; Clone what you
// keep.
func (r *Reader) ReadFrame() (Frame, error) {
	if r.err != nil {
		return nil, r.err
	}
	for stalls := 0; ; {
		f, n, err := r.d.Parse(r.buf[r.start:r.end])
		if err == nil {
			r.start += n
			return f, nil
		}
		if !errors.Is(err, ErrIncomplete) {
			r.err = err
			return nil, err
		}
		if r.rerr != nil {
			if r.rerr == io.EOF && r.start != r.end {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, r.rerr
		}
		// Parse has checked the length prefix, if it is there, against
		// the maximum: need is at most PrefixSize+MaxFrameSize.
		if r.start == r.end {
			r.start, r.end = 0, 0
		}
		need := PrefixSize
		if r.end-r.start >= PrefixSize {
			need += int(binary.BigEndian.Uint32(r.buf[r.start:]))
		}
		if r.start+need > len(r.buf) {
			if need > len(r.buf) {
				nb := make([]byte, max(need, readerMinBuf))
				r.end = copy(nb, r.buf[r.start:r.end])
				r.buf = nb
			} else {
				r.end = copy(r.buf, r.buf[r.start:r.end])
			}
			r.start = 0
		}
		m, err := r.r.Read(r.buf[r.end:])
		r.end += m
		switch {
		case err != nil:
			r.rerr = err
		case m == 0:
			if stalls++; stalls >= 100 {
				return nil, io.ErrNoProgress
			}
		}
	}
}
