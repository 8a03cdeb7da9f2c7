package ledger

import "github.com/google/uuid"

// namespace of pushledger's deterministic event ids (UUIDv5).
var idNamespace = uuid.MustParse("6f1c3c52-4a5e-4c1e-9a57-0b3d2f2f4a11")

// DeterministicID returns a UUIDv5 of the given parts, so that the same
// command retried produces the same event id and the append is idempotent.
func DeterministicID(parts ...string) string {
	n := 0
	for _, p := range parts {
		n += len(p) + 1
	}
	b := make([]byte, 0, n)
	for _, p := range parts {
		b = append(b, p...)
		b = append(b, 0)
	}
	return uuid.NewSHA1(idNamespace, b).String()
}

// NewID returns a random UUIDv4 text id.
func NewID() string { return uuid.NewString() }
