// Package event holds what the domain packages share about persisted
// events: decoding a JSON payload into its type, and the text rules every
// persisted string obeys. Standard library only.
package event

import (
	"encoding/json"
	"unicode/utf8"
)

// Decode unmarshals a persisted JSON payload into a new T.
func Decode[T any](data []byte) (T, error) {
	var v T
	err := json.Unmarshal(data, &v)
	return v, err
}

// ValidUTF8 reports whether every string is valid UTF-8. Persisted events
// are JSON, which cannot carry other bytes in strings unchanged: a string
// that is not UTF-8 would read back different from what was decided.
func ValidUTF8(ss ...string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}
