//go:build !linux

package main

import (
	"context"
	"errors"
)

func scrapeInto(ctx context.Context, nsName, url string, t zoneTable) error {
	return errors.New("needs root on Linux: the proxies' metrics are inside the cluster's network namespaces")
}
