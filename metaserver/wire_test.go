package metaserver

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
)

func TestWireErrorsRoundTrip(t *testing.T) {
	cases := []struct {
		err  error
		want error
	}{
		{Errf("lookup", syscall.ENOENT, "%q", "x"), syscall.ENOENT},
		{fmt.Errorf("%w: need 6 chunkservers, 2 eligible", ErrNoSpace), ErrNoSpace},
		{ErrConflict, ErrConflict},
		{fmt.Errorf("create: %w: leadership lost", ErrUnavailable), ErrUnavailable},
		{fmt.Errorf("%w: decoding", ErrBadRequest), ErrBadRequest},
	}
	for _, c := range cases {
		got := ToWire(c.err).Err()
		if !errors.Is(got, c.want) {
			t.Errorf("%v came back as %v, not matching %v", c.err, got, c.want)
		}
		// The sentinel's text appears once, not once per hop.
		if n := strings.Count(got.Error(), c.want.Error()); n != 1 {
			t.Errorf("%q repeats %q %d times", got, c.want, n)
		}
	}
	var nl *ErrNotLeader
	if got := ToWire(&ErrNotLeader{Leader: "a:1"}).Err(); !errors.As(got, &nl) || nl.Leader != "a:1" {
		t.Errorf("not-leader came back as %v", got)
	}
}
