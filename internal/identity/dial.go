package identity

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// DialControlPlane is how a node proxy (ztunnel, waypoint) reaches the
// control plane: the mesh roots loaded from rootCertFile verify it
// (ControlPlaneTLSConfig), and every call carries the node's bearer token,
// re-read from tokenFile each time. The returned bundle is the one the
// connection verifies with: give it to the certificate Manager so both
// follow root rotations.
func DialControlPlane(addr, rootCertFile, trustDomain, tokenFile string) (*grpc.ClientConn, *Bundle, error) {
	bundle, err := LoadBundle(rootCertFile)
	if err != nil {
		return nil, nil, fmt.Errorf("mesh roots: %w", err)
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(ControlPlaneTLSConfig(bundle, trustDomain))),
		grpc.WithPerRPCCredentials(NodeTokenCredentials(TokenFromFile(tokenFile))))
	if err != nil {
		return nil, nil, fmt.Errorf("control plane %s: %w", addr, err)
	}
	return conn, bundle, nil
}
