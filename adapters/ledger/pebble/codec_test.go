package pebbleledger

import (
	"bytes"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/pushledger/pushledger/adapters/ledger"
)

func sampleRecord() []byte {
	e := ledger.EventData{ID: ledger.NewID(), Type: "message.accepted.v1", Data: []byte(`{"a":1}`), Metadata: []byte(`{"c":"x"}`)}
	return appendRecord(nil, "message-1", 7, time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC).UnixNano(), &e)
}

func TestRecordRoundTrip(t *testing.T) {
	e := ledger.EventData{ID: "id-1", Type: "t", Data: []byte{0, 1, 2}, Metadata: nil}
	b := appendRecord([]byte("junk"), "s", math.MaxUint64, -1, &e)
	r, err := decodeRecord(b[4:])
	if err != nil {
		t.Fatal(err)
	}
	got := r.event(42)
	want := ledger.RecordedEvent{ID: "id-1", Stream: "s", Revision: math.MaxUint64, Position: 42, Type: "t",
		Data: []byte{0, 1, 2}, Recorded: time.Unix(0, -1).UTC()}
	if !sameRecorded(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	// Data and Metadata may share storage but not capacity.
	e.Metadata = []byte("meta")
	r, _ = decodeRecord(appendRecord(nil, "s", 0, 0, &e))
	got = r.event(1)
	got.Data = append(got.Data, 'X')
	if string(got.Metadata) != "meta" {
		t.Fatalf("appending to Data changed Metadata to %q", got.Metadata)
	}
}

func TestDecodeRecordRejects(t *testing.T) {
	good := sampleRecord()
	cases := map[string][]byte{
		"empty":     nil,
		"version":   append([]byte{2}, good[1:]...),
		"truncated": good[:len(good)-1],
		"trailing":  append(bytes.Clone(good), 0),
		"huge len":  {recordVersion, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
	}
	for name, b := range cases {
		if _, err := decodeRecord(b); !errors.Is(err, errCorrupt) {
			t.Errorf("%s: err = %v, want errCorrupt", name, err)
		}
	}
}

func sameRecorded(a, b ledger.RecordedEvent) bool {
	return a.ID == b.ID && a.Stream == b.Stream && a.Revision == b.Revision && a.Position == b.Position &&
		a.Type == b.Type && bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Metadata, b.Metadata) &&
		a.Recorded.Equal(b.Recorded) && a.Recorded.Location() == time.UTC
}

// FuzzDecodeRecord: decoding arbitrary bytes never panics, and whatever
// decodes re-encodes to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(sampleRecord())
	f.Add([]byte{})
	f.Add([]byte{recordVersion})
	f.Add([]byte{recordVersion, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{recordVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error %v is not errCorrupt", err)
			}
			return
		}
		e := r.event(1)
		d := ledger.EventData{ID: e.ID, Type: e.Type, Data: e.Data, Metadata: e.Metadata}
		again := appendRecord(nil, e.Stream, e.Revision, e.Recorded.UnixNano(), &d)
		// Varints have one canonical encoding only if minimal; compare
		// decoded values instead of bytes.
		r2, err := decodeRecord(again)
		if err != nil {
			t.Fatalf("re-encoding does not decode: %v", err)
		}
		if !sameRecorded(r2.event(1), e) {
			t.Fatalf("round trip changed %+v into %+v", e, r2.event(1))
		}
	})
}

// FuzzRecordRoundTrip: encode then decode gives back the fields.
func FuzzRecordRoundTrip(f *testing.F) {
	f.Add("stream-1", uint64(0), int64(0), "id", "type", []byte(`{}`), []byte(nil))
	f.Add("", uint64(math.MaxUint64), int64(math.MinInt64), "", "", []byte{0}, []byte{0xff})
	f.Fuzz(func(t *testing.T, stream string, rev uint64, recorded int64, id, typ string, data, meta []byte) {
		e := ledger.EventData{ID: id, Type: typ, Data: data, Metadata: meta}
		r, err := decodeRecord(appendRecord(nil, stream, rev, recorded, &e))
		if err != nil {
			t.Fatal(err)
		}
		got := r.event(9)
		want := ledger.RecordedEvent{ID: id, Stream: stream, Revision: rev, Position: 9, Type: typ,
			Data: data, Metadata: meta, Recorded: time.Unix(0, recorded).UTC()}
		if !sameRecorded(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})
}

// FuzzDecodeIDEntry: arbitrary bytes never panic; valid entries round-trip.
func FuzzDecodeIDEntry(f *testing.F) {
	f.Add(appendIDEntry(nil, &idEntry{index: 1, count: 3, revision: 10, lastPos: 99, stream: "s"}))
	f.Add([]byte{idEntryVersion, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeIDEntry(b)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error %v is not errCorrupt", err)
			}
			return
		}
		e2, err := decodeIDEntry(appendIDEntry(nil, &e))
		if err != nil || e2 != e {
			t.Fatalf("round trip %+v -> %+v, %v", e, e2, err)
		}
		_ = e.result()
	})
}

func TestStreamKeysDoNotCollide(t *testing.T) {
	// With a length prefix, no stream's keys fall inside another's range.
	names := []string{"a", "a\x00", "a\x00b", "ab", "", "\x01a", "a\xff"}
	for _, x := range names {
		lo := streamPrefix(nil, x)
		hi := upperBound(lo)
		for _, y := range names {
			if x == y {
				continue
			}
			for _, rev := range []uint64{0, 1, math.MaxUint64} {
				k := streamKey(nil, y, rev)
				if bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) < 0 {
					t.Fatalf("key of %q rev %d inside the range of %q", y, rev, x)
				}
			}
		}
	}
}
