package client

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/pushledger/pushledger/gateway/wire"
)

func id(n int) wire.MessageID { return wire.MessageID{0: 1, 14: byte(n >> 8), 15: byte(n)} }

func TestStoreRingSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := openStore(dir, 4)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 6; i++ {
		if err := s.add(id(i)); err != nil {
			t.Fatal(err)
		}
	}
	check := func(s *store, what string) {
		t.Helper()
		for i := 1; i <= 6; i++ {
			if got, want := s.seenID(id(i)), i > 2; got != want {
				t.Errorf("%s: seen(%d) = %v, want %v (the ring keeps the last 4)", what, i, got, want)
			}
		}
		if s.lastAcked() != id(6) {
			t.Errorf("%s: last acked %v", what, s.lastAcked())
		}
	}
	check(s, "before restart")
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, seenFile)); err != nil || fi.Size() != ringHeader+4*recordSize {
		t.Fatalf("ring file: %v %v, want fixed size", fi, err)
	}
	s, err = openStore(dir, 4)
	if err != nil {
		t.Fatal(err)
	}
	check(s, "after restart")
	// Writing on continues the sequence.
	if err := s.add(id(7)); err != nil {
		t.Fatal(err)
	}
	if s.seenID(id(3)) || !s.seenID(id(7)) || s.lastAcked() != id(7) {
		t.Error("after one more add")
	}
	s.close()

	// A smaller ring keeps the newest ids; a torn record is ignored.
	s, err = openStore(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !s.seenID(id(6)) || !s.seenID(id(7)) || s.seenID(id(5)) || s.lastAcked() != id(7) {
		t.Error("after shrinking")
	}
	s.close()
	f, err := os.OpenFile(filepath.Join(dir, seenFile), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// id(7) has seq 6, in slot 0 of 2: corrupt its CRC.
	if _, err := f.WriteAt([]byte{0xff}, ringHeader+recordSize-1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s, err = openStore(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if s.seenID(id(7)) || !s.seenID(id(6)) || s.lastAcked() != id(6) {
		t.Errorf("torn record: seen7=%v seen6=%v last=%v", s.seenID(id(7)), s.seenID(id(6)), s.lastAcked())
	}
}

func TestStorePendingOpens(t *testing.T) {
	dir := t.TempDir()
	s, err := openStore(dir, 8)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.addOpened([]wire.MessageID{id(1), id(2)}); err != nil {
		t.Fatal(err)
	}
	if err := s.addOpened([]wire.MessageID{id(3)}); err != nil {
		t.Fatal(err)
	}
	s.close()
	s, err = openStore(dir, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	var sent []wire.MessageID
	failing := func([]wire.MessageID) error { return os.ErrClosed }
	if err := s.sendOpened(failing); err == nil {
		t.Fatal("send error lost")
	}
	if err := s.sendOpened(func(ids []wire.MessageID) error { sent = slices.Clone(ids); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sent, []wire.MessageID{id(1), id(2), id(3)}) {
		t.Errorf("sent %v", sent)
	}
	if err := s.sendOpened(func([]wire.MessageID) error { t.Error("sent twice"); return nil }); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, openedFile)); fi.Size() != 0 {
		t.Errorf("pending file has %d bytes after sending", fi.Size())
	}
}

// FuzzStoreLoad: whatever the ring file holds (a torn, truncated or
// foreign file), opening the store does not fail or panic, remembers at
// most its capacity, and works afterwards.
func FuzzStoreLoad(f *testing.F) {
	valid := func(size int, ids ...int) []byte {
		b := make([]byte, ringHeader+size*recordSize)
		copy(b, ringMagic)
		b[11] = byte(size)
		for seq, n := range ids {
			encodeRecord(b[ringHeader+(seq%size)*recordSize:], record{id: id(n), seq: uint64(seq)})
		}
		return b
	}
	f.Add(valid(4, 1, 2, 3, 4, 5, 6), uint8(4))
	f.Add(valid(4, 1, 2), uint8(2))
	f.Add(valid(2, 1, 2, 3)[:30], uint8(3))
	f.Add([]byte("not a ring"), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, size uint8) {
		n := int(size%16) + 1
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, seenFile), data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := openStore(dir, n)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.ids) > n {
			t.Fatalf("%d ids remembered, capacity %d", len(s.ids), n)
		}
		fresh := wire.MessageID{0xff, 0xee}
		if err := s.add(fresh); err != nil {
			t.Fatal(err)
		}
		s.close()
		s, err = openStore(dir, n)
		if err != nil {
			t.Fatal(err)
		}
		defer s.close()
		if !s.seenID(fresh) || s.lastAcked() != fresh {
			t.Fatal("the id added after loading is lost")
		}
	})
}
