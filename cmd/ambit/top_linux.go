package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/ambit-mesh/ambit/internal/netns"
)

// scrapeInto fetches url from inside the named network namespace.
func scrapeInto(ctx context.Context, nsName, url string, t zoneTable) error {
	ns, err := netns.OpenNamed(nsName)
	if err != nil {
		return err
	}
	defer ns.Close()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: netns.Dialer(ns, netns.SocketOptions{Timeout: 2 * time.Second}), DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return parseZoneMetrics(resp.Body, t)
}
