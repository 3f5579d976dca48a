package state

import (
	"testing"

	meshv1 "github.com/ambit-mesh/ambit/api/mesh/v1"
	"github.com/ambit-mesh/ambit/internal/xds"
)

func uidOf(ns, name string) string { return "local/Pod/" + ns + "/" + name }

// wl is an ambient pod: HBONE, healthy, on node-a in r1/z1.
func wl(ns, name string, addrs ...string) *meshv1.Workload {
	return &meshv1.Workload{
		Uid:            uidOf(ns, name),
		Name:           name,
		Namespace:      ns,
		Addresses:      addrs,
		Node:           "node-a",
		ServiceAccount: "sa-" + name,
		TrustDomain:    "cluster.local",
		ClusterId:      "local",
		Locality:       &meshv1.Locality{Region: "r1", Zone: "z1"},
		TunnelProtocol: meshv1.TunnelProtocol_HBONE,
	}
}

// backs makes w back the service key with the given service→target ports.
func backs(w *meshv1.Workload, key string, ports ...uint32) *meshv1.Workload {
	if w.Services == nil {
		w.Services = map[string]*meshv1.PortList{}
	}
	pl := &meshv1.PortList{}
	for i := 0; i+1 < len(ports); i += 2 {
		pl.Ports = append(pl.Ports, &meshv1.Port{ServicePort: ports[i], TargetPort: ports[i+1]})
	}
	w.Services[key] = pl
	return w
}

func svcKey(ns, name string) string { return ns + "/" + name + "." + ns + ".svc.cluster.local" }

func svc(ns, name string, vips []string, ports ...*meshv1.ServicePort) *meshv1.Service {
	return &meshv1.Service{
		Name:      name,
		Namespace: ns,
		Hostname:  name + "." + ns + ".svc.cluster.local",
		Addresses: vips,
		Ports:     ports,
	}
}

func port(p, target uint32) *meshv1.ServicePort {
	return &meshv1.ServicePort{Port: p, TargetPort: target, AppProtocol: meshv1.AppProtocol_HTTP}
}

func resourceName(m any) string {
	switch m := m.(type) {
	case *meshv1.Workload:
		return m.GetUid()
	case *meshv1.Service:
		return m.GetNamespace() + "/" + m.GetHostname()
	case *meshv1.Authorization:
		return m.GetNamespace() + "/" + m.GetName()
	case *meshv1.PeerAuthentication:
		return m.GetNamespace() + "/" + m.GetName()
	}
	panic("unknown message")
}

// upserts builds a TypeUpdate of one type from messages.
func workloads(ws ...*meshv1.Workload) xds.TypeUpdate {
	tu := xds.TypeUpdate{TypeURL: meshv1.TypeWorkload}
	for _, w := range ws {
		tu.Upserts = append(tu.Upserts, xds.Resource{Name: resourceName(w), Message: w})
	}
	return tu
}

func services(ss ...*meshv1.Service) xds.TypeUpdate {
	tu := xds.TypeUpdate{TypeURL: meshv1.TypeService}
	for _, s := range ss {
		tu.Upserts = append(tu.Upserts, xds.Resource{Name: resourceName(s), Message: s})
	}
	return tu
}

func authorizations(as ...*meshv1.Authorization) xds.TypeUpdate {
	tu := xds.TypeUpdate{TypeURL: meshv1.TypeAuthorization}
	for _, a := range as {
		tu.Upserts = append(tu.Upserts, xds.Resource{Name: resourceName(a), Message: a})
	}
	return tu
}

func peerAuths(ps ...*meshv1.PeerAuthentication) xds.TypeUpdate {
	tu := xds.TypeUpdate{TypeURL: meshv1.TypePeerAuthentication}
	for _, p := range ps {
		tu.Upserts = append(tu.Upserts, xds.Resource{Name: resourceName(p), Message: p})
	}
	return tu
}

func removes(typeURL string, names ...string) xds.TypeUpdate {
	return xds.TypeUpdate{TypeURL: typeURL, Removes: names}
}

// update merges the type updates of one type, as the xds client sends them.
func update(tus ...xds.TypeUpdate) *xds.Update {
	u := &xds.Update{Epoch: "e1", Version: 1}
	idx := map[string]int{}
	for _, tu := range tus {
		i, ok := idx[tu.TypeURL]
		if !ok {
			idx[tu.TypeURL] = len(u.Types)
			u.Types = append(u.Types, tu)
			continue
		}
		u.Types[i].Upserts = append(u.Types[i].Upserts, tu.Upserts...)
		u.Types[i].Removes = append(u.Types[i].Removes, tu.Removes...)
	}
	return u
}

func mustApply(t testing.TB, s *Store, tus ...xds.TypeUpdate) {
	t.Helper()
	if err := s.Apply(update(tus...)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

// firstChooser always takes the first eligible endpoint of the tier.
func firstChooser() *LocalityChooser {
	return &LocalityChooser{IntN: func(int) int { return 0 }}
}
