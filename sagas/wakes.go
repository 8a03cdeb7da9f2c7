package sagas

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/pushledger/pushledger/projections"
)

// The durable timers: one wake-up time per open message, stored in the
// read-model store under its partition, written with the partition's
// checkpoint. A runner that takes a partition loads them; everything after
// the checkpoint is decided again from the ledger, so a wake-up lost in a
// crash is found again.
//
//	wk \x00 <partition u16> <message id> -> <unix nanoseconds u64>
var wakePrefix = []byte("wk\x00")

// partitionOf maps a message id to one of n partitions.
func partitionOf(id string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(n))
}

func wakeKey(part int, id string) []byte {
	k := make([]byte, 0, len(wakePrefix)+2+len(id))
	k = append(k, wakePrefix...)
	k = binary.BigEndian.AppendUint16(k, uint16(part))
	return append(k, id...)
}

func partitionPrefix(part int) []byte {
	return binary.BigEndian.AppendUint16(append([]byte{}, wakePrefix...), uint16(part))
}

// checkpointName names partition part's checkpoint.
func checkpointName(part int) string { return fmt.Sprintf("saga-%03d", part) }

// wakeOp is a change to one message's durable timer: set it to At, or
// delete it when At is zero.
type wakeOp struct {
	id string
	at time.Time
	// rev is the stream revision the decision was made at (not stored).
	rev int64
}

func writeWakes(w projections.Writer, parts int, ops []wakeOp) error {
	for _, op := range ops {
		k := wakeKey(partitionOf(op.id, parts), op.id)
		if op.at.IsZero() {
			if err := w.Delete(k); err != nil {
				return err
			}
			continue
		}
		if err := w.Set(k, binary.BigEndian.AppendUint64(nil, uint64(op.at.UnixNano()))); err != nil {
			return err
		}
	}
	return nil
}

// loadWakes calls fn for every durable timer of partition part.
func loadWakes(s projections.Store, part int, fn func(id string, at time.Time)) error {
	lo := partitionPrefix(part)
	hi := partitionPrefix(part + 1)
	var bad error
	err := s.Scan(lo, hi, false, func(k, v []byte) bool {
		if len(v) != 8 {
			bad = fmt.Errorf("sagas: wake %q: %d-byte value", k, len(v))
			return false
		}
		fn(string(k[len(lo):]), time.Unix(0, int64(binary.BigEndian.Uint64(v))))
		return true
	})
	if err != nil {
		return err
	}
	return bad
}
