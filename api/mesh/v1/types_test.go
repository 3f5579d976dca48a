package meshv1

import (
	"testing"

	"google.golang.org/protobuf/proto"
)

func TestTypeURLs(t *testing.T) {
	for url, msg := range map[string]proto.Message{
		TypeWorkload: &Workload{}, TypeService: &Service{}, TypeAuthorization: &Authorization{},
		TypePeerAuthentication: &PeerAuthentication{}, TypeWaypointConfig: &WaypointConfig{},
	} {
		if want := "type.googleapis.com/" + string(msg.ProtoReflect().Descriptor().FullName()); url != want {
			t.Errorf("type URL %q, want %q", url, want)
		}
	}
}
