package xds

import (
	"context"
	"fmt"
	"testing"
)

// waiting is how many streams wait for the budget.
func waiting(b *pushBudget) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.waiting)
}

func TestPushBudgetAdmitsInOrderAndAloneWhenLarge(t *testing.T) {
	b := newPushBudget(10)
	ctx := context.Background()
	if !b.acquire(ctx, 6) {
		t.Fatal("first acquire refused")
	}
	order := make(chan int, 3)
	for i, n := range []int64{6, 20, 1} { // 20 exceeds the limit: it goes when nothing else is out
		go func() {
			if b.acquire(ctx, n) {
				order <- i
			}
		}()
		// Queue them in this order.
		waitFor(t, fmt.Sprintf("waiter %d to queue", i), func() bool { return waiting(b) == i+1 })
	}
	if len(order) != 0 {
		t.Fatalf("a waiter was admitted while the budget was full")
	}
	b.release(6)
	if i := <-order; i != 0 {
		t.Fatalf("admitted waiter %d first, want 0 (arrival order)", i)
	}
	b.release(6)
	if i := <-order; i != 1 {
		t.Fatalf("admitted waiter %d, want the large one alone", i)
	}
	b.release(20)
	if i := <-order; i != 2 {
		t.Fatalf("admitted waiter %d, want 2", i)
	}
	b.release(1)
	if b.used != 0 {
		t.Fatalf("%d bytes still counted", b.used)
	}
}

func TestPushBudgetWaiterLeavesWithItsStream(t *testing.T) {
	b := newPushBudget(10)
	b.acquire(context.Background(), 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan bool)
	go func() { done <- b.acquire(ctx, 5) }()
	waitFor(t, "the waiter to queue", func() bool { return waiting(b) == 1 })
	cancel()
	if <-done {
		t.Fatal("a cancelled waiter was admitted")
	}
	b.release(10)
	if b.used != 0 || len(b.waiting) != 0 {
		t.Fatalf("used %d, %d waiting after the stream left", b.used, len(b.waiting))
	}
}

func TestStreamFlowReleasesOnAnswerAndClose(t *testing.T) {
	b := newPushBudget(100)
	f := newStreamFlow(b)
	send := func() error { return nil }
	if err := f.send(context.Background(), "rds", 40, send); err != nil {
		t.Fatal(err)
	}
	if err := f.send(context.Background(), "eds", 30, send); err != nil {
		t.Fatal(err)
	}
	f.answered("rds")
	if b.used != 30 {
		t.Fatalf("after the RDS ACK %d bytes counted, want 30", b.used)
	}
	f.closed()
	if b.used != 0 {
		t.Fatalf("after the stream ended %d bytes counted, want 0", b.used)
	}
}
