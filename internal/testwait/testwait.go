// Package testwait is how tests wait for something to happen elsewhere (a
// background flush, a heartbeat, a mount): poll a condition until it holds
// or a deadline passes. Every package's waitFor is one of these.
package testwait

import (
	"testing"
	"time"
)

// poll is how often the condition is asked.
const poll = 5 * time.Millisecond

// For waits up to ten seconds for cond.
func For(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, 10*time.Second, what, cond)
}

// Within waits up to d for cond, and fails the test naming what it waited
// for when cond still does not hold.
func Within(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(poll)
	}
}
