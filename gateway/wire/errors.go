package wire

import (
	"errors"
	"fmt"
)

// Sentinel errors. Parse and AppendFrame return them bare (ErrIncomplete)
// or wrapped in a *FrameError that says where and why; branch with
// errors.Is, read the detail with errors.As.
var (
	// ErrIncomplete: the buffer holds the beginning of a frame that may
	// still turn out well-formed; call again with more bytes. It is not a
	// failure, except when the stream ends there (a truncated frame).
	ErrIncomplete = errors.New("wire: incomplete frame")
	// ErrFrameTooLarge: the length prefix exceeds the maximum frame size.
	ErrFrameTooLarge = errors.New("wire: frame too large")
	// ErrUnsupportedVersion: the version byte is not Version.
	ErrUnsupportedVersion = errors.New("wire: unsupported protocol version")
	// ErrUnknownType: the type byte is not a frame type of this version.
	ErrUnknownType = errors.New("wire: unknown frame type")
	// ErrMalformed: a field breaks the encoding rules (lengths, varints,
	// UTF-8, undefined flag bits, ranges, trailing bytes).
	ErrMalformed = errors.New("wire: malformed frame")
	// ErrInvalidFrame: AppendFrame was given a frame that cannot be
	// encoded (a field out of its range). A bug in the caller.
	ErrInvalidFrame = errors.New("wire: invalid frame")
)

// FrameError is the detail of a decoding or encoding failure.
type FrameError struct {
	// Err is the sentinel: ErrFrameTooLarge, ErrUnsupportedVersion,
	// ErrUnknownType, ErrMalformed or ErrInvalidFrame.
	Err error
	// Type is the frame's type, 0 when the failure came before it.
	Type Type
	// Field names the offending field ("length", "flags", "device_id",
	// ...), as in docs/gateway-protocol.md.
	Field string
	// Offset is the field's offset from the first byte of the length
	// prefix; -1 when encoding.
	Offset int
	// Detail says what is wrong with the field.
	Detail string
}

func (e *FrameError) Error() string {
	s := e.Err.Error()
	if e.Type != 0 {
		s += ": " + e.Type.String()
	}
	if e.Field != "" {
		s += " " + e.Field
		if e.Offset >= 0 {
			s += fmt.Sprintf(" at offset %d", e.Offset)
		}
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

func (e *FrameError) Unwrap() error { return e.Err }

// CodeFor returns the DISCONNECT code to send for err, an error returned by
// this package or one that carries its own code:
//
//   - nil: CodeNormal;
//   - ErrFrameTooLarge: CodeFrameTooLarge;
//   - ErrUnsupportedVersion: CodeUnsupportedVersion;
//   - ErrUnknownType: CodeProtocolError;
//   - ErrMalformed, and ErrIncomplete (a stream that ended inside a
//     frame): CodeMalformedFrame;
//   - an error with a method DisconnectCode() Code anywhere in its chain
//     (errors.As): that code, so other packages' errors (authentication,
//     state machine) map themselves;
//   - anything else, ErrInvalidFrame included: CodeInternalError.
func CodeFor(err error) Code {
	switch {
	case err == nil:
		return CodeNormal
	case errors.Is(err, ErrFrameTooLarge):
		return CodeFrameTooLarge
	case errors.Is(err, ErrUnsupportedVersion):
		return CodeUnsupportedVersion
	case errors.Is(err, ErrUnknownType):
		return CodeProtocolError
	case errors.Is(err, ErrMalformed), errors.Is(err, ErrIncomplete):
		return CodeMalformedFrame
	}
	var coded interface{ DisconnectCode() Code }
	if errors.As(err, &coded) {
		return coded.DisconnectCode()
	}
	return CodeInternalError
}

func malformed(t Type, field string, off int, format string, args ...any) error {
	return &FrameError{Err: ErrMalformed, Type: t, Field: field, Offset: off, Detail: fmt.Sprintf(format, args...)}
}

func invalid(t Type, field string, format string, args ...any) error {
	return &FrameError{Err: ErrInvalidFrame, Type: t, Field: field, Offset: -1, Detail: fmt.Sprintf(format, args...)}
}
