package converter

import (
	"context"
	"io"
	"sync"
	"time"
)

// DefaultQuiet is how long the registry must have served no blob transfer
// before background conversion starts or resumes. A client pulls an image's
// layers back to back (and usually a few at a time), and a pull often follows
// the push that queued the conversion within milliseconds; a second without
// transfers is far longer than those gaps and still short next to the
// seconds a pushed image takes to index.
const DefaultQuiet = time.Second

// Foreground counts the registry's blob transfers in flight (uploads and
// downloads) so that background conversion can wait for them to end. Reading
// a just-pushed layer to index it costs about as much CPU and disk as serving
// it, so running both at once slows the transfer a client is waiting for to
// finish work nobody is waiting for yet.
//
// The zero value is not usable; call NewForeground. It is safe for concurrent
// use.
type Foreground struct {
	quiet time.Duration
	now   func() time.Time

	mu      sync.Mutex
	active  int
	lastEnd time.Time
	changed chan struct{} // closed and replaced whenever active or lastEnd changes
}

// NewForeground returns a tracker whose WaitIdle wants quiet (<= 0:
// DefaultQuiet) without transfers.
func NewForeground(quiet time.Duration) *Foreground {
	if quiet <= 0 {
		quiet = DefaultQuiet
	}
	return &Foreground{quiet: quiet, now: time.Now, changed: make(chan struct{})}
}

// Begin marks a transfer as started; the returned func marks it as ended and
// must be called exactly once. Its signature is that of
// registry.Config.OnTransfer.
func (f *Foreground) Begin() (end func()) {
	f.mu.Lock()
	f.active++
	f.notifyLocked()
	f.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			f.active--
			f.lastEnd = f.now()
			f.notifyLocked()
			f.mu.Unlock()
		})
	}
}

func (f *Foreground) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Active returns the transfers in flight.
func (f *Foreground) Active() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.active
}

// WaitIdle returns nil once no transfer is in flight and none has ended for
// the quiet period, or at deadline (zero: no deadline) even if transfers go
// on, so that a registry that is never idle still converts what is pushed to
// it. It returns ctx's error if ctx ends first.
func (f *Foreground) WaitIdle(ctx context.Context, deadline time.Time) error {
	for {
		f.mu.Lock()
		now := f.now()
		if !deadline.IsZero() && !now.Before(deadline) {
			f.mu.Unlock()
			return nil
		}
		var wait time.Duration // 0: wait for a change only
		if f.active == 0 {
			left := f.quiet - now.Sub(f.lastEnd)
			if f.lastEnd.IsZero() || left <= 0 {
				f.mu.Unlock()
				return nil
			}
			wait = left
		}
		if !deadline.IsZero() && (wait == 0 || deadline.Sub(now) < wait) {
			wait = deadline.Sub(now)
		}
		changed := f.changed
		f.mu.Unlock()

		var timer *time.Timer
		var fire <-chan time.Time
		if wait > 0 {
			timer = time.NewTimer(wait)
			fire = timer.C
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// yieldKey carries, in the context of a background indexing call, the func
// that blob reads call before each read so that indexing pauses while
// foreground transfers run.
type yieldKey struct{}

func withYield(ctx context.Context, yield func(context.Context) error) context.Context {
	return context.WithValue(ctx, yieldKey{}, yield)
}

// yieldingReader calls yield before every read of the blob: indexing reads a
// layer in 256 KiB pieces, so a transfer that starts in the middle of a layer
// pauses it within one piece.
type yieldingReader struct {
	ctx   context.Context
	r     io.ReaderAt
	yield func(context.Context) error
}

func (y yieldingReader) ReadAt(p []byte, off int64) (int, error) {
	if err := y.yield(y.ctx); err != nil {
		return 0, err
	}
	return y.r.ReadAt(p, off)
}
