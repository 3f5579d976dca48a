// Package e2e tests the ambit binaries end to end: `ambit up` of the
// quickstart in network namespaces, requests between pods through the
// ztunnels, `ambit get/exec/logs`, and `ambit down` leaving nothing behind.
// The tests need root (they are skipped otherwise, and fail under CI=1).
//
// TestConformanceLocal runs the Gateway API mesh conformance cases
// (test/conformance, shared with internal/waypoint's netns harness) on a
// cluster started from the suite's own manifests, with `ambit app echo` as
// the backend and each test's routes applied and deleted live.
//
// They build ambit and ztunnel into a temporary directory, start clusters
// with unique names (e2e<pid>...) and remove them, so they can run next to
// a cluster someone started by hand.
package e2e
