package server

import (
	"context"
	"testing"
	"time"
)

func TestPacerForgivesOldDebt(t *testing.T) {
	// A pass that started a minute ago and read nothing: it owes a minute
	// of reading, but may only burst maxDebt's worth before being paced.
	p := &pacer{rate: 1 << 20, start: time.Now().Add(-time.Minute)}
	if err := p.wait(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	behind := time.Since(p.start.Add(time.Duration(float64(p.done) / float64(p.rate) * float64(time.Second))))
	if behind > maxDebt+time.Second || behind < maxDebt-time.Second {
		t.Errorf("after a long stall the pacer is %v behind, want about %v", behind, maxDebt)
	}
	// Reading ahead of the rate waits, and a cancelled context ends the wait.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.wait(ctx, 1<<30); err == nil {
		t.Error("wait for a gigabyte at 1 MiB/s returned without error on a cancelled context")
	}
}
