package client

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/pushledger/pushledger/gateway/wire"
)

// Store files, in Config.StoreDir.
const (
	seenFile   = "seen.ring"
	openedFile = "opened.pending"
)

// The dedup ring: a 16-byte header (magic, u32 capacity, u32 zero), then
// capacity records of 28 bytes: id (16), sequence number (u64), CRC-32C of
// the first 24 bytes (u32). Record seq lives in slot seq % capacity; a
// record with a bad CRC (torn write, never written) is empty. The record
// with the highest seq is the last message acknowledged.
const (
	ringMagic  = "PLDEDUP1"
	ringHeader = 16
	recordSize = 28
)

func checksum(b []byte) uint32 {
	return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) // MakeTable caches Castagnoli's table
}

// store remembers, on disk, the ids of the last messages handled (to
// deduplicate redeliveries across connections and process restarts), the
// last acknowledged id, and the opens not yet sent. Each write is fsynced
// before it returns. Safe for concurrent use.
type store struct {
	mu      sync.Mutex
	seen    *os.File
	opened  *os.File
	size    int
	ids     map[wire.MessageID]uint64 // id -> seq
	slots   []wire.MessageID          // by slot; zero: empty
	used    []bool
	next    uint64 // seq of the next record
	last    wire.MessageID
	pending []wire.MessageID // opens not yet sent
}

type record struct {
	id  wire.MessageID
	seq uint64
}

func openStore(dir string, size int) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("client: store: %w", err)
	}
	seen, err := os.OpenFile(filepath.Join(dir, seenFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("client: store: %w", err)
	}
	s := &store{seen: seen, size: size, ids: make(map[wire.MessageID]uint64, size), slots: make([]wire.MessageID, size), used: make([]bool, size)}
	if err := s.loadSeen(); err != nil {
		seen.Close()
		return nil, err
	}
	if s.opened, err = os.OpenFile(filepath.Join(dir, openedFile), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		seen.Close()
		return nil, fmt.Errorf("client: store: %w", err)
	}
	if err := s.loadOpened(); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// loadSeen reads the ring; a ring of another capacity (or none) is
// rewritten with the newest records that fit.
func (s *store) loadSeen() error {
	data, err := io.ReadAll(s.seen)
	if err != nil {
		return fmt.Errorf("client: store: %w", err)
	}
	var recs []record
	sameSize := len(data) >= ringHeader && string(data[:8]) == ringMagic &&
		int(binary.BigEndian.Uint32(data[8:])) == s.size
	if len(data) >= ringHeader && string(data[:8]) == ringMagic {
		for off := ringHeader; off+recordSize <= len(data); off += recordSize {
			r := data[off : off+recordSize]
			if checksum(r[:24]) != binary.BigEndian.Uint32(r[24:]) {
				continue
			}
			var rec record
			copy(rec.id[:], r[:16])
			rec.seq = binary.BigEndian.Uint64(r[16:])
			recs = append(recs, rec)
		}
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].seq < recs[j].seq })
	if len(recs) > s.size {
		recs = recs[len(recs)-s.size:]
	}
	if !sameSize {
		hdr := make([]byte, ringHeader, ringHeader+s.size*recordSize)
		copy(hdr, ringMagic)
		binary.BigEndian.PutUint32(hdr[8:], uint32(s.size))
		img := append(hdr, make([]byte, s.size*recordSize)...)
		for _, rec := range recs {
			encodeRecord(img[ringHeader+int(rec.seq%uint64(s.size))*recordSize:], rec)
		}
		if err := s.seen.Truncate(0); err != nil {
			return fmt.Errorf("client: store: %w", err)
		}
		if _, err := s.seen.WriteAt(img, 0); err != nil {
			return fmt.Errorf("client: store: %w", err)
		}
		if err := s.seen.Sync(); err != nil {
			return fmt.Errorf("client: store: %w", err)
		}
	}
	for _, rec := range recs {
		s.remember(rec)
	}
	return nil
}

func encodeRecord(b []byte, rec record) {
	copy(b, rec.id[:])
	binary.BigEndian.PutUint64(b[16:], rec.seq)
	binary.BigEndian.PutUint32(b[24:], checksum(b[:24]))
}

// remember puts rec in memory, evicting the id its slot held.
func (s *store) remember(rec record) {
	slot := int(rec.seq % uint64(s.size))
	if s.used[slot] {
		old := s.slots[slot]
		if seq, ok := s.ids[old]; ok && seq < rec.seq && int(seq%uint64(s.size)) == slot {
			delete(s.ids, old)
		}
	}
	s.slots[slot], s.used[slot] = rec.id, true
	s.ids[rec.id] = rec.seq
	s.next = rec.seq + 1
	s.last = rec.id
}

// seen reports whether id was handled (is among the last size ids).
func (s *store) seenID(id wire.MessageID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	return ok
}

// add records id as handled and acknowledged, durably.
func (s *store) add(id wire.MessageID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := record{id: id, seq: s.next}
	var b [recordSize]byte
	encodeRecord(b[:], rec)
	if _, err := s.seen.WriteAt(b[:], ringHeader+int64(rec.seq%uint64(s.size))*recordSize); err != nil {
		return fmt.Errorf("client: store: %w", err)
	}
	if err := s.seen.Sync(); err != nil {
		return fmt.Errorf("client: store: %w", err)
	}
	s.remember(rec)
	return nil
}

// lastAcked is the id of the last message recorded by add.
func (s *store) lastAcked() wire.MessageID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func (s *store) loadOpened() error {
	data, err := io.ReadAll(s.opened)
	if err != nil {
		return fmt.Errorf("client: store: %w", err)
	}
	for off := 0; off+16 <= len(data); off += 16 {
		s.pending = append(s.pending, wire.MessageID(data[off:off+16]))
	}
	return nil
}

// addOpened appends opens to the pending file, durably.
func (s *store) addOpened(ids []wire.MessageID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := make([]byte, 0, 16*len(ids))
	for _, id := range ids {
		b = append(b, id[:]...)
	}
	off := int64(16 * len(s.pending))
	if _, err := s.opened.WriteAt(b, off); err != nil {
		return fmt.Errorf("client: store: %w", err)
	}
	if err := s.opened.Sync(); err != nil {
		return fmt.Errorf("client: store: %w", err)
	}
	s.pending = append(s.pending, ids...)
	return nil
}

// sendOpened passes the pending opens to send and, if it succeeds,
// forgets them. The store stays locked meanwhile, so opens added
// concurrently wait and are not lost.
func (s *store) sendOpened(send func([]wire.MessageID) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) == 0 {
		return nil
	}
	if err := send(s.pending); err != nil {
		return err
	}
	s.pending = nil
	if err := s.opened.Truncate(0); err != nil {
		return fmt.Errorf("client: store: %w", err)
	}
	return s.opened.Sync()
}

func (s *store) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if s.seen != nil {
		errs = append(errs, s.seen.Close())
		s.seen = nil
	}
	if s.opened != nil {
		errs = append(errs, s.opened.Close())
		s.opened = nil
	}
	return errors.Join(errs...)
}
