// Command ambit-cni is Ambit's chained CNI plugin: the container runtime
// runs it after the pod's network is set up, and it has the node agent
// enrol pods of ambient namespaces in the mesh before they start. See
// internal/cni.
package main

import "github.com/ambit-mesh/ambit/internal/cni"

func main() { cni.PluginMain() }
