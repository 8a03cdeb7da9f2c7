package pebbleledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/pushledger/pushledger/adapters/ledger"
)

// Key prefixes. See the package documentation for the layout.
const (
	prefixAll     = 'a' // a <pos BE8>                          -> record
	prefixCat     = 'c' // c <uvarint len(cat)> <cat> <pos BE8>  -> "" (layout 3)
	prefixEventID = 'e' // e <uvarint len(stream)> <stream> <event id> -> idempotency entry
	prefixHead    = 'h' // h <stream>                           -> last revision BE8
	prefixID      = 'i' // i <event id> -> idempotency entry (layout 1, read only)
	prefixMeta    = 'm' // m <name>                             -> value
	prefixStream  = 's' // s <uvarint len(stream)> <stream> <rev BE8> -> pos BE8
	layoutVersion = "3"
	// layoutVersion2 had no category index (c keys); a store of layout 2
	// (or 1) gets it built at Open.
	layoutVersion2 = "2"
	// layoutVersion1 kept the idempotency index by event id alone (i keys);
	// a store of layout 1 is upgraded at Open and its i keys still read.
	layoutVersion1 = "1"
)

var errCorrupt = errors.New("pebbleledger: corrupt value")

func allKey(dst []byte, pos uint64) []byte {
	dst = append(dst, prefixAll)
	return binary.BigEndian.AppendUint64(dst, pos)
}

// allKeyPos decodes an allKey.
func allKeyPos(k []byte) (uint64, error) {
	if len(k) != 9 || k[0] != prefixAll {
		return 0, fmt.Errorf("%w: key %x", errCorrupt, k)
	}
	return binary.BigEndian.Uint64(k[1:]), nil
}

func headKey(dst []byte, stream string) []byte {
	dst = append(dst, prefixHead)
	return append(dst, stream...)
}

func idKey(dst []byte, id string) []byte {
	dst = append(dst, prefixID)
	return append(dst, id...)
}

// eventIDKey is the key of the idempotency entry of event id in stream.
func eventIDKey(dst []byte, stream, id string) []byte {
	dst = append(dst, prefixEventID)
	dst = binary.AppendUvarint(dst, uint64(len(stream)))
	dst = append(dst, stream...)
	return append(dst, id...)
}

// category is a stream's category: its name up to and including the
// first '-' ("message-" for "message-42"), or "" when it has none. Every
// event of a stream with a category is also indexed under it, so that a
// subscription or read filtered by one category reads only its events.
func category(stream string) string {
	for i := 0; i < len(stream); i++ {
		if stream[i] == '-' {
			return stream[:i+1]
		}
	}
	return ""
}

// filterCategory returns the category a filter selects, when its stream
// prefixes are exactly one category: one prefix ending in its only '-'.
func filterCategory(f *ledger.Filter) (string, bool) {
	if f == nil || len(f.StreamPrefixes) != 1 {
		return "", false
	}
	p := f.StreamPrefixes[0]
	if p == "" || category(p) != p {
		return "", false
	}
	return p, true
}

func categoryPrefix(dst []byte, cat string) []byte {
	dst = append(dst, prefixCat)
	dst = binary.AppendUvarint(dst, uint64(len(cat)))
	return append(dst, cat...)
}

func categoryKey(dst []byte, cat string, pos uint64) []byte {
	return binary.BigEndian.AppendUint64(categoryPrefix(dst, cat), pos)
}

func metaKey(name string) []byte {
	return append([]byte{prefixMeta}, name...)
}

// streamPrefix is the prefix of the stream index keys of stream. The length
// prefix makes it unambiguous: no other stream's keys start with it.
func streamPrefix(dst []byte, stream string) []byte {
	dst = append(dst, prefixStream)
	dst = binary.AppendUvarint(dst, uint64(len(stream)))
	return append(dst, stream...)
}

func streamKey(dst []byte, stream string, rev uint64) []byte {
	return binary.BigEndian.AppendUint64(streamPrefix(dst, stream), rev)
}

// upperBound is an exclusive upper bound of all keys prefix + 8 bytes.
func upperBound(prefix []byte) []byte {
	out := make([]byte, len(prefix), len(prefix)+9)
	copy(out, prefix)
	return append(out, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
}

func be8(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func decodeBE8(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: %d-byte integer", errCorrupt, len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// Record encoding, the value of an a<pos> key:
//
//	version byte (1)
//	uvarint revision
//	varint  recorded, Unix nanoseconds
//	uvarint len, stream
//	uvarint len, id
//	uvarint len, type
//	uvarint len, data
//	uvarint len, metadata
const recordVersion = 1

// appendRecord appends the encoding of e to dst.
func appendRecord(dst []byte, stream string, rev uint64, recorded int64, e *ledger.EventData) []byte {
	dst = append(dst, recordVersion)
	dst = binary.AppendUvarint(dst, rev)
	dst = binary.AppendVarint(dst, recorded)
	dst = appendBytes(dst, stream)
	dst = appendBytes(dst, e.ID)
	dst = appendBytes(dst, e.Type)
	dst = appendBytes(dst, e.Data)
	return appendBytes(dst, e.Metadata)
}

func appendBytes[T string | []byte](dst []byte, b T) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// recordView is a decoded record whose byte fields alias the encoding.
type recordView struct {
	revision uint64
	recorded int64
	stream   []byte
	id       []byte
	typ      []byte
	data     []byte
	metadata []byte
}

// decoder reads the fields of an encoding, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad uvarint", errCorrupt)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad varint", errCorrupt)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = fmt.Errorf("%w: truncated", errCorrupt)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) lenBytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: length %d beyond %d bytes", errCorrupt, n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(d.b))
	}
	return d.err
}

// decodeRecord decodes a record. The view aliases b.
func decodeRecord(b []byte) (recordView, error) {
	d := decoder{b: b}
	if v := d.u8(); d.err == nil && v != recordVersion {
		return recordView{}, fmt.Errorf("%w: record version %d", errCorrupt, v)
	}
	r := recordView{
		revision: d.uvarint(),
		recorded: d.varint(),
		stream:   d.lenBytes(),
		id:       d.lenBytes(),
		typ:      d.lenBytes(),
		data:     d.lenBytes(),
		metadata: d.lenBytes(),
	}
	if err := d.end(); err != nil {
		return recordView{}, err
	}
	return r, nil
}

// matches reports whether the record passes f, without allocating.
func (r *recordView) matches(f *ledger.Filter) bool {
	return matchPrefixes(f.StreamPrefixes, r.stream) && matchPrefixes(f.TypePrefixes, r.typ)
}

func matchPrefixes(prefixes []string, b []byte) bool {
	if len(prefixes) == 0 {
		return true
	}
	for _, p := range prefixes {
		if len(b) >= len(p) && string(b[:len(p)]) == p {
			return true
		}
	}
	return false
}

// event copies the record into a RecordedEvent the caller owns. Data and
// Metadata share one allocation, capped so that appending to one cannot
// overwrite the other.
func (r *recordView) event(pos uint64) ledger.RecordedEvent {
	e := ledger.RecordedEvent{
		ID:       string(r.id),
		Stream:   string(r.stream),
		Revision: r.revision,
		Position: pos,
		Type:     string(r.typ),
		Recorded: time.Unix(0, r.recorded).UTC(),
	}
	if n := len(r.data) + len(r.metadata); n > 0 {
		buf := make([]byte, n)
		copy(buf, r.data)
		copy(buf[len(r.data):], r.metadata)
		if len(r.data) > 0 {
			e.Data = buf[:len(r.data):len(r.data)]
		}
		if len(r.metadata) > 0 {
			e.Metadata = buf[len(r.data):]
		}
	}
	return e
}

// Expected-state kinds as stored in idempotency entries.
const (
	kindAny byte = iota
	kindNoStream
	kindStreamExists
	kindRevision
)

// expectation is a StreamState in comparable, storable form.
type expectation struct {
	kind byte
	rev  uint64
}

func expectationOf(s ledger.StreamState) (expectation, bool) {
	switch v := s.(type) {
	case ledger.Any:
		return expectation{kind: kindAny}, true
	case ledger.NoStream:
		return expectation{kind: kindNoStream}, true
	case ledger.StreamExists:
		return expectation{kind: kindStreamExists}, true
	case ledger.Revision:
		return expectation{kind: kindRevision, rev: uint64(v)}, true
	case *ledger.Any:
		return expectation{kind: kindAny}, v != nil
	case *ledger.NoStream:
		return expectation{kind: kindNoStream}, v != nil
	case *ledger.StreamExists:
		return expectation{kind: kindStreamExists}, v != nil
	case *ledger.Revision:
		if v == nil {
			return expectation{}, false
		}
		return expectation{kind: kindRevision, rev: uint64(*v)}, true
	}
	return expectation{}, false
}

// holds reports whether a stream whose last revision is head (if exists)
// satisfies the expectation.
func (x expectation) holds(head uint64, exists bool) bool {
	switch x.kind {
	case kindAny:
		return true
	case kindNoStream:
		return !exists
	case kindStreamExists:
		return exists
	default:
		return exists && head == x.rev
	}
}

// idEntry is the value of an e<stream><event id> key (and of a layout-1
// i<event id> key): where the event went and the
// append it belonged to, so that a retry of that append can be recognised
// and answered with the original result.
//
//	version byte (1)
//	uvarint index of the event within its append
//	uvarint number of events of the append
//	uvarint revision of the event
//	uvarint position of the last event of the append (AppendResult.Position)
//	stream name, the rest
type idEntry struct {
	index    uint64
	count    uint64
	revision uint64
	lastPos  uint64
	stream   string
}

const idEntryVersion = 1

func appendIDEntry(dst []byte, e *idEntry) []byte {
	dst = append(dst, idEntryVersion)
	dst = binary.AppendUvarint(dst, e.index)
	dst = binary.AppendUvarint(dst, e.count)
	dst = binary.AppendUvarint(dst, e.revision)
	dst = binary.AppendUvarint(dst, e.lastPos)
	return append(dst, e.stream...)
}

func decodeIDEntry(b []byte) (idEntry, error) {
	d := decoder{b: b}
	if v := d.u8(); d.err == nil && v != idEntryVersion {
		return idEntry{}, fmt.Errorf("%w: id entry version %d", errCorrupt, v)
	}
	e := idEntry{
		index:    d.uvarint(),
		count:    d.uvarint(),
		revision: d.uvarint(),
		lastPos:  d.uvarint(),
	}
	if d.err != nil {
		return idEntry{}, d.err
	}
	if e.count == 0 || e.index >= e.count || e.revision < e.index {
		return idEntry{}, fmt.Errorf("%w: id entry %+v", errCorrupt, e)
	}
	e.stream = string(d.b)
	return e, nil
}

// firstRevision is the revision of the first event of the entry's append.
func (e *idEntry) firstRevision() uint64 { return e.revision - e.index }

// madeAt reports whether exp held when the entry's append was made: Any,
// NoStream for an append that started the stream, StreamExists or the
// revision before it for any other.
func (e *idEntry) madeAt(exp expectation) bool {
	first := e.firstRevision()
	return exp.holds(first-1, first > 0)
}

// result is the AppendResult of the entry's append.
func (e *idEntry) result() ledger.AppendResult {
	return ledger.AppendResult{NextExpectedRevision: e.firstRevision() + e.count - 1, Position: e.lastPos}
}
