package push

// Type URLs of the mesh resources (api/mesh/v1/mesh.proto). The same strings
// are defined in internal/xds for the proxy side; a test keeps them equal.
const (
	TypeWorkload           = "type.googleapis.com/ambit.mesh.v1.Workload"
	TypeService            = "type.googleapis.com/ambit.mesh.v1.Service"
	TypeAuthorization      = "type.googleapis.com/ambit.mesh.v1.Authorization"
	TypePeerAuthentication = "type.googleapis.com/ambit.mesh.v1.PeerAuthentication"
	TypeWaypointConfig     = "type.googleapis.com/ambit.mesh.v1.WaypointConfig"
)

// Wildcard is the subscription name meaning "every resource of the type".
const Wildcard = "*"

// typeURLPrefix is what a type URL is made of besides the message's full name.
const typeURLPrefix = "type.googleapis.com/"
