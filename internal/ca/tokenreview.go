package ca

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
)

// NodeNameExtra is the TokenReview extra field in which the API server
// names the node of the pod a bound service account token belongs to.
const NodeNameExtra = "authentication.kubernetes.io/node-name"

// DefaultTokenAudience is the audience node proxies request for the
// service account token they present to the control plane.
const DefaultTokenAudience = "ambit-controlplane"

// TokenReviewAuthenticator authenticates node proxies on Kubernetes by their
// pod's bound service account token, asking the API server (TokenReview).
// A token is accepted only when it is valid for one of Audiences and is
// bound to a pod: the API server then says which node that pod runs on, and
// that node is the caller's. A token of one of the ServiceAccounts allowed
// to act for a node (the ztunnel's) authenticates that node's proxy. With
// Workloads set, the bound token of any other service account
// authenticates that one workload (a waypoint), which may obtain only its
// own identity; without it such tokens are refused.
type TokenReviewAuthenticator struct {
	Reviews authnclient.TokenReviewInterface
	// Audiences the token must be valid for (default DefaultTokenAudience).
	Audiences []string
	// ServiceAccounts are "namespace/name" of the accounts node proxies run as.
	ServiceAccounts []string
	// Workloads accepts bound tokens of other service accounts as
	// workloads scoped to their own identity (see Caller).
	Workloads bool
	// CacheTTL keeps a successful review this long, so a proxy's burst of
	// certificate requests costs one API call (default 30s; a deleted pod's
	// token stays usable at most this much longer).
	CacheTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time

	mu    sync.Mutex
	cache map[[32]byte]reviewed
}

type reviewed struct {
	caller  Caller
	expires time.Time
}

// Authenticate implements NodeAuthenticator: the node of the caller, node
// proxy or workload.
func (a *TokenReviewAuthenticator) Authenticate(ctx context.Context) (string, error) {
	c, err := a.AuthenticateCaller(ctx)
	return c.Node, err
}

// AuthenticateCaller implements CallerAuthenticator.
func (a *TokenReviewAuthenticator) AuthenticateCaller(ctx context.Context) (Caller, error) {
	token, err := BearerToken(ctx)
	if err != nil {
		return Caller{}, err
	}
	return a.Review(ctx, token)
}

// Review returns who the token's holder is. Errors never contain the
// token; an API server that cannot be asked is codes.Unavailable, so the
// proxy retries rather than giving up.
func (a *TokenReviewAuthenticator) Review(ctx context.Context, token string) (Caller, error) {
	if a.Reviews == nil {
		return Caller{}, errors.New("TokenReview authenticator has no API client")
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	key := sha256.Sum256([]byte(token))
	a.mu.Lock()
	if r, ok := a.cache[key]; ok && now().Before(r.expires) {
		a.mu.Unlock()
		return r.caller, nil
	}
	a.mu.Unlock()

	audiences := a.Audiences
	if len(audiences) == 0 {
		audiences = []string{DefaultTokenAudience}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tr, err := a.Reviews.Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: audiences}}, metav1.CreateOptions{})
	if err != nil {
		return Caller{}, status.Errorf(codes.Unavailable, "CA: cannot review the service account token with the Kubernetes API: %v", err)
	}
	st := tr.Status
	if !st.Authenticated {
		reason := st.Error
		if reason == "" {
			reason = "not authenticated"
		}
		return Caller{}, fmt.Errorf("service account token rejected by the Kubernetes API (audiences %s): %s", strings.Join(audiences, ","), reason)
	}
	if !slices.ContainsFunc(st.Audiences, func(a string) bool { return slices.Contains(audiences, a) }) {
		return Caller{}, fmt.Errorf("service account token is not valid for audience %s", strings.Join(audiences, ","))
	}
	ns, name, ok := strings.Cut(strings.TrimPrefix(st.User.Username, "system:serviceaccount:"), ":")
	if !ok || !strings.HasPrefix(st.User.Username, "system:serviceaccount:") {
		return Caller{}, fmt.Errorf("token of %q is not a service account token", st.User.Username)
	}
	caller := Caller{}
	if !slices.Contains(a.ServiceAccounts, ns+"/"+name) {
		if !a.Workloads {
			return Caller{}, fmt.Errorf("service account %s/%s may not act for a node (allowed: %s)", ns, name, strings.Join(a.ServiceAccounts, ", "))
		}
		caller.Namespace, caller.ServiceAccount = ns, name
	}
	nodes := st.User.Extra[NodeNameExtra]
	if len(nodes) != 1 || nodes[0] == "" {
		return Caller{}, fmt.Errorf("token of service account %s/%s is not bound to a pod on a node: use a projected (bound) service account token", ns, name)
	}
	caller.Node = nodes[0]
	ttl := a.CacheTTL
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	a.mu.Lock()
	if a.cache == nil || len(a.cache) > 10000 {
		a.cache = map[[32]byte]reviewed{} // bounded: old entries go all at once
	}
	a.cache[key] = reviewed{caller: caller, expires: now().Add(ttl)}
	a.mu.Unlock()
	return caller, nil
}
