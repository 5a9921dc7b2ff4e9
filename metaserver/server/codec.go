package server

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// Log entries are encoded in a small binary envelope rather than JSON: the
// payload (the operation's arguments as the client sent them, JSON or the
// binary form of metaserver.AppendBinary) is carried as is, so neither the
// leader nor the followers scan it twice.
//
//	version byte | uvarint len + type | uvarint len + request id |
//	varint time | uvarint seed | varint lease | payload (rest)
const codecVersion = 1

func encodeCommand(c *command) []byte {
	b := make([]byte, 0, 1+len(c.Type)+len(c.ReqID)+4*binary.MaxVarintLen64+len(c.Payload))
	b = append(b, codecVersion)
	b = binary.AppendUvarint(b, uint64(len(c.Type)))
	b = append(b, c.Type...)
	b = binary.AppendUvarint(b, uint64(len(c.ReqID)))
	b = append(b, c.ReqID...)
	b = binary.AppendVarint(b, c.Time)
	b = binary.AppendUvarint(b, c.Seed)
	b = binary.AppendVarint(b, c.Lease)
	return append(b, c.Payload...)
}

var errShortEntry = errors.New("truncated log entry")

func decodeCommand(b []byte, c *command) error {
	if len(b) > 0 && b[0] == '{' {
		// Entries written before the binary envelope were the command as
		// JSON. Logs keep them until the next snapshot, so a node upgraded
		// in place must still apply them.
		if err := json.Unmarshal(b, c); err != nil {
			return fmt.Errorf("legacy JSON log entry: %w", err)
		}
		return nil
	}
	if len(b) == 0 || b[0] != codecVersion {
		return fmt.Errorf("log entry codec version %v, want %d", b[:min(len(b), 1)], codecVersion)
	}
	b = b[1:]
	str := func() (string, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return "", errShortEntry
		}
		s := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return s, nil
	}
	var err error
	if c.Type, err = str(); err != nil {
		return err
	}
	if c.ReqID, err = str(); err != nil {
		return err
	}
	var k int
	if c.Time, k = binary.Varint(b); k <= 0 {
		return errShortEntry
	}
	b = b[k:]
	if c.Seed, k = binary.Uvarint(b); k <= 0 {
		return errShortEntry
	}
	b = b[k:]
	if c.Lease, k = binary.Varint(b); k <= 0 {
		return errShortEntry
	}
	c.Payload = b[k:]
	return nil
}
