package ca

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/metadata"
)

// NodeAuthenticator tells which node is calling. It is deliberately one
// method so other credentials (a Kubernetes TokenReview of the ztunnel's
// service-account token, mTLS) fit behind it. An error that is a gRPC status
// (e.g. codes.Unavailable when the API server is down) is passed through as
// is; any other error becomes codes.Unauthenticated.
type NodeAuthenticator interface {
	Authenticate(ctx context.Context) (node string, err error)
}

// Caller is an authenticated caller: a node proxy, which may obtain the
// identities of the pods on its node, or a single workload on a node (a
// waypoint presenting its own service account token), which may obtain its
// own identity only.
type Caller struct {
	Node string
	// Namespace and ServiceAccount are set for a workload: the only
	// identity it may obtain. Empty for a node proxy.
	Namespace, ServiceAccount string
}

// Workload reports whether the caller is a single workload rather than a node.
func (c Caller) Workload() bool { return c.ServiceAccount != "" }

// CallerAuthenticator is a NodeAuthenticator that also authenticates
// single workloads (Caller.Workload). The CA asks it when it is available.
type CallerAuthenticator interface {
	NodeAuthenticator
	AuthenticateCaller(ctx context.Context) (Caller, error)
}

// authenticateCaller asks a CallerAuthenticator, else a NodeAuthenticator
// (whose callers are all nodes).
func authenticateCaller(ctx context.Context, a NodeAuthenticator) (Caller, error) {
	if ca, ok := a.(CallerAuthenticator); ok {
		return ca.AuthenticateCaller(ctx)
	}
	node, err := a.Authenticate(ctx)
	return Caller{Node: node}, err
}

// BearerToken returns the token of the incoming gRPC call's
// "authorization: Bearer <token>" metadata. The error never contains the token.
func BearerToken(ctx context.Context) (string, error) {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return "", errors.New("no request metadata: an authorization: Bearer <node token> header is required")
	}
	vals := md.Get("authorization")
	switch len(vals) {
	case 0:
		return "", errors.New("missing authorization metadata: an authorization: Bearer <node token> header is required")
	case 1:
	default:
		return "", fmt.Errorf("%d authorization headers, want exactly one", len(vals))
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", errors.New("authorization metadata is not of the form \"Bearer <token>\"")
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return "", errors.New("authorization metadata has an empty bearer token")
	}
	return token, nil
}

// tokenContext separates node tokens from any other use of the key, and
// versions the format.
const tokenContext = "ambit-node-token:v1:"

// mintToken is base64url(node) "." base64url(HMAC-SHA256(key, context+node)),
// unpadded. The node name travels in the clear; the MAC binds it.
func mintToken(key []byte, node string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(node)) + "." +
		base64.RawURLEncoding.EncodeToString(tokenMAC(key, node))
}

func tokenMAC(key []byte, node string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(tokenContext + node))
	return m.Sum(nil)
}

// NodeToken issues the bearer token with which node's proxy authenticates to
// the control plane in file/local mode. It is a secret: hand it to that node
// only, and never log it. Tokens do not expire; rotating the key file
// (Dir/node-token-key) revokes them all.
func (c *CA) NodeToken(node string) string { return mintToken(c.tokenKey, node) }

// TokenAuthenticator returns the authenticator for tokens from NodeToken.
func (c *CA) TokenAuthenticator() *TokenAuthenticator { return &TokenAuthenticator{key: c.tokenKey} }

// TokenAuthenticator verifies node tokens minted with the same key (see
// CA.NodeToken).
type TokenAuthenticator struct {
	key []byte
}

// NewTokenAuthenticator verifies tokens minted with key.
func NewTokenAuthenticator(key []byte) (*TokenAuthenticator, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("node token key is %d bytes, want at least 32", len(key))
	}
	return &TokenAuthenticator{key: key}, nil
}

// Authenticate implements NodeAuthenticator.
func (a *TokenAuthenticator) Authenticate(ctx context.Context) (string, error) {
	token, err := BearerToken(ctx)
	if err != nil {
		return "", err
	}
	return a.Verify(token)
}

// Verify returns the node a token was issued to. The MAC is compared in
// constant time; errors never contain the token.
func (a *TokenAuthenticator) Verify(token string) (string, error) {
	nodePart, macPart, ok := strings.Cut(token, ".")
	if !ok {
		return "", errors.New("node token is malformed: want <node>.<signature>")
	}
	nodeBytes, err := base64.RawURLEncoding.DecodeString(nodePart)
	if err != nil || len(nodeBytes) == 0 {
		return "", errors.New("node token is malformed: node part is not non-empty base64url")
	}
	mac, err := base64.RawURLEncoding.DecodeString(macPart)
	if err != nil {
		return "", errors.New("node token is malformed: signature part is not base64url")
	}
	node := string(nodeBytes)
	if !hmac.Equal(mac, tokenMAC(a.key, node)) {
		// Name the claimed node: it helps find the misconfigured proxy, and
		// the claim alone is worthless without the key.
		return "", fmt.Errorf("node token for %q has an invalid signature (issued by another CA, or the token key was rotated)", node)
	}
	return node, nil
}
