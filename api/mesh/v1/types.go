package meshv1

// Type URLs of the pushed resources, as they appear in Discovery requests and
// in each Resource's Any. Hand-written (not generated): the one place both
// the control plane and proxies take them from.
const (
	TypeWorkload           = "type.googleapis.com/ambit.mesh.v1.Workload"
	TypeService            = "type.googleapis.com/ambit.mesh.v1.Service"
	TypeAuthorization      = "type.googleapis.com/ambit.mesh.v1.Authorization"
	TypePeerAuthentication = "type.googleapis.com/ambit.mesh.v1.PeerAuthentication"
	TypeWaypointConfig     = "type.googleapis.com/ambit.mesh.v1.WaypointConfig"
)

// Wildcard is the subscription name meaning "every resource of the type".
const Wildcard = "*"
