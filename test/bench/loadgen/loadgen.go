// Package loadgen sends AdmissionReview requests to a webhook server over TLS with
// keep-alive, the way the API server does, and measures throughput and latency.
//
// With a fixed rate the schedule is open-loop: each request has a planned start time
// and its latency is counted from that time, so a server that stalls is charged for
// the requests queued behind the stall (no coordinated omission).
package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Request is one AdmissionReview to send, to a path on the target.
type Request struct {
	Path string
	Body []byte
}

// Config is one load run.
type Config struct {
	// BaseURL is the server, e.g. https://127.0.0.1:9443.
	BaseURL string
	// CA verifies the server's certificate (PEM).
	CA []byte
	// Concurrency is the number of connections, each with one request in flight.
	Concurrency int
	// Duration bounds the run; Requests, if set, stops it after that many requests.
	Duration time.Duration
	Requests int
	// Rate, if set, is the fixed number of requests per second across all connections;
	// zero sends each request as soon as the previous one on its connection is answered.
	Rate float64
	// Requests are sent in turn.
	Mix []Request
}

// Result is what a run measured.
type Result struct {
	Sent     int
	Errors   int
	Elapsed  time.Duration
	FirstErr error
	// latencies are sorted.
	latencies []time.Duration
}

// Throughput is successful requests per second.
func (r Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Sent-r.Errors) / r.Elapsed.Seconds()
}

// Percentile returns the latency at p (0..100) of the successful requests.
func (r Result) Percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(r.latencies)))) - 1
	return r.latencies[min(max(i, 0), len(r.latencies)-1)]
}

// NewClient is an HTTP/1.1 client with keep-alive, one idle connection per worker,
// trusting ca: what the API server's webhook client looks like from the server.
func NewClient(ca []byte, conns int) (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("loadgen: no certificate in the CA PEM")
	}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			MaxConnsPerHost:     conns,
			IdleConnTimeout:     90 * time.Second,
			ForceAttemptHTTP2:   false,
		},
	}, nil
}

// Run sends the load and waits for every request in flight to be answered.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Concurrency < 1 || len(cfg.Mix) == 0 || (cfg.Duration <= 0 && cfg.Requests <= 0) {
		return Result{}, errors.New("loadgen: need Concurrency >= 1, a request mix, and a Duration or a request count")
	}
	client, err := NewClient(cfg.CA, cfg.Concurrency)
	if err != nil {
		return Result{}, err
	}
	defer client.CloseIdleConnections()
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}

	// Each token is a planned start time; workers take tokens and send.
	tokens := make(chan time.Time, cfg.Concurrency)
	go func() {
		defer close(tokens)
		start := time.Now()
		for i := 0; cfg.Requests <= 0 || i < cfg.Requests; i++ {
			planned := time.Now()
			if cfg.Rate > 0 {
				planned = start.Add(time.Duration(float64(i) / cfg.Rate * float64(time.Second)))
				if wait := time.Until(planned); wait > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(wait):
					}
				}
			}
			select {
			case <-ctx.Done():
				return
			case tokens <- planned:
			}
		}
	}()

	uids := make([]types.UID, len(cfg.Mix))
	for i, r := range cfg.Mix {
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(r.Body, &review); err != nil || review.Request == nil {
			return Result{}, fmt.Errorf("loadgen: request %d is not an AdmissionReview with a request", i)
		}
		uids[i] = review.Request.UID
	}
	var (
		mu       sync.Mutex
		res      Result
		next     atomic.Int64
		perConns = make([][]time.Duration, cfg.Concurrency)
	)
	begin := time.Now()
	var wg sync.WaitGroup
	for w := range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for planned := range tokens {
				i := int(next.Add(1)-1) % len(cfg.Mix)
				// A request already planned is sent even when the run's time is up, so
				// every request counted is answered; it gets its own deadline.
				err := send(context.WithoutCancel(ctx), client, cfg.BaseURL+cfg.Mix[i].Path, cfg.Mix[i].Body, uids[i])
				latency := time.Since(planned)
				mu.Lock()
				res.Sent++
				if err != nil {
					res.Errors++
					if res.FirstErr == nil {
						res.FirstErr = err
					}
				}
				mu.Unlock()
				if err == nil {
					perConns[w] = append(perConns[w], latency)
				}
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(begin)
	for _, l := range perConns {
		res.latencies = append(res.latencies, l...)
	}
	slices.Sort(res.latencies)
	return res, nil
}

// send posts one AdmissionReview and checks the answer is an allowed response for it.
func send(ctx context.Context, client *http.Client, url string, body []byte, uid types.UID) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := Answer(ctx, client, url, body)
	if err != nil {
		return err
	}
	if !resp.Allowed || resp.UID != uid {
		return fmt.Errorf("not an allowed answer to request %s: allowed %t, UID %s", uid, resp.Allowed, resp.UID)
	}
	return nil
}

// Answer posts one AdmissionReview to url and returns the response in the server's
// answer, for a caller that looks at what the server did (its patch), not only that
// it answered.
func Answer(ctx context.Context, client *http.Client, url string, body []byte) (*admissionv1.AdmissionResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, data)
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(data, &review); err != nil {
		return nil, fmt.Errorf("answer is not an AdmissionReview: %w", err)
	}
	if review.Response == nil {
		return nil, fmt.Errorf("answer has no response: %.200s", data)
	}
	return review.Response, nil
}
