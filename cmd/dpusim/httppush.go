package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// pusher sends messages as HTTP pushes (POST /v1/dpus/{id}/events, DESIGN 5) from a
// pool of workers and counts the answers, as publisher counts PUBACKs: a push is
// acknowledged by a 200. A 503 (not stored: send again) and a lost connection are
// sent again, up to a few times; any other answer is a failure.
type pusher struct {
	acks
	base, token string
	client      *http.Client
	ch          chan Msg
	abandon     chan struct{}
	wg          sync.WaitGroup
}

// pushAttempts bounds the sends of one push; maxQueuedPushes the pushes waiting
// for a worker (the pacing loop waits beyond, as for PUBACKs past
// maxInflightPerConn).
const (
	pushAttempts    = 5
	maxQueuedPushes = 20000
)

func newPusher(base, token string, workers int) *pusher {
	p := &pusher{
		base: strings.TrimRight(base, "/"), token: token,
		client:  &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers}},
		ch:      make(chan Msg, maxQueuedPushes),
		abandon: make(chan struct{}),
	}
	for range workers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for m := range p.ch {
				p.done(p.send(m))
			}
		}()
	}
	return p
}

// push queues m; it blocks while every worker is busy and the queue is full, or
// until ctx is done (the run is cancelled: m is not sent).
func (p *pusher) push(ctx context.Context, m Msg) {
	select {
	case p.ch <- m:
		p.sent.Add(1)
	case <-ctx.Done():
	}
}

func (p *pusher) send(m Msg) error {
	url := p.base + "/v1/dpus/" + m.DPUID + "/events"
	var last error
	for attempt := 0; attempt < pushAttempts; attempt++ {
		select {
		case <-p.abandon:
			return errors.New("push abandoned: the run was cancelled")
		default:
		}
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
		}
		req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, bytes.NewReader(m.Payload))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+p.token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := p.client.Do(req)
		if err != nil {
			last = fmt.Errorf("push to %s: %w", url, err)
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			return nil
		case http.StatusServiceUnavailable:
			last = fmt.Errorf("push to %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
			continue
		}
		return fmt.Errorf("push to %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	return last
}

// close waits for the queued pushes (or, abandoning, for those in flight only).
func (p *pusher) close(abandon bool) {
	if abandon {
		close(p.abandon)
	}
	close(p.ch)
	p.wg.Wait()
	p.client.CloseIdleConnections()
}
