//go:build !linux

package main

import (
	"errors"

	"github.com/ambit-mesh/ambit/internal/local"
)

func runInPod(pod *local.PodState, argv []string) (int, error) {
	return 0, errors.New("needs root on Linux")
}
