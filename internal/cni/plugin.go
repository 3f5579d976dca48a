package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// PluginName is the plugin's "type" in a CNI configuration.
const PluginName = "ambit-cni"

// Config is the plugin's entry in the chain.
type Config struct {
	types.NetConf
	// AgentSocket is the node agent's socket (default DefaultSocket).
	AgentSocket string `json:"agentSocket,omitempty"`
	// TimeoutSeconds bounds waiting for the node agent, enrolment and the
	// ztunnel's acknowledgement included (default 30).
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
}

func parseConfig(stdin []byte) (*Config, error) {
	conf := &Config{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, fmt.Errorf("%s: bad network configuration: %w", PluginName, err)
	}
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.NetConf); err != nil {
			return nil, fmt.Errorf("%s: bad prevResult: %w", PluginName, err)
		}
	}
	if conf.AgentSocket == "" {
		conf.AgentSocket = DefaultSocket
	}
	if conf.TimeoutSeconds <= 0 {
		conf.TimeoutSeconds = 30
	}
	return conf, nil
}

// k8sArgs are the CNI_ARGS a Kubernetes runtime passes.
type k8sArgs struct {
	types.CommonArgs
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive // names are the runtime's
	K8S_POD_NAMESPACE          types.UnmarshallableString
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString
	K8S_POD_UID                types.UnmarshallableString
}

func request(cmd string, args *skel.CmdArgs, conf *Config) (*Request, error) {
	var ka k8sArgs
	if err := types.LoadArgs(args.Args, &ka); err != nil {
		return nil, fmt.Errorf("%s: CNI_ARGS: %w", PluginName, err)
	}
	if ka.K8S_POD_NAME == "" || ka.K8S_POD_NAMESPACE == "" {
		return nil, nil // not a Kubernetes pod: nothing to do
	}
	req := &Request{Command: cmd, ContainerID: args.ContainerID, Netns: args.Netns, IfName: args.IfName,
		PodName: string(ka.K8S_POD_NAME), PodNamespace: string(ka.K8S_POD_NAMESPACE), PodUID: string(ka.K8S_POD_UID)}
	if r, ok := conf.PrevResult.(*current.Result); ok {
		for _, ip := range r.IPs {
			req.IPs = append(req.IPs, ip.Address.IP.String())
		}
	}
	return req, nil
}

func ask(conf *Config, req *Request) (Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(conf.TimeoutSeconds)*time.Second)
	defer cancel()
	resp, err := NewClient(conf.AgentSocket).Do(ctx, *req)
	if err != nil {
		return resp, fmt.Errorf("%s: %s %s/%s: %w", PluginName, req.Command, req.PodNamespace, req.PodName, err)
	}
	return resp, nil
}

// prevResult converts the previous plugin's result to the configuration's
// version, to be passed on unchanged.
func prevResult(conf *Config) (types.Result, error) {
	if conf.PrevResult == nil {
		return nil, fmt.Errorf("%s is a chained plugin: it must follow the plugin that sets up the pod's network (no prevResult)", PluginName)
	}
	return conf.PrevResult, nil
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	prev, err := prevResult(conf)
	if err != nil {
		return err
	}
	req, err := request(CmdAdd, args, conf)
	if err != nil {
		return err
	}
	if req != nil {
		if _, err := ask(conf, req); err != nil {
			return err
		}
	}
	return types.PrintResult(prev, conf.CNIVersion)
}

func cmdDel(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	req, err := request(CmdDel, args, conf)
	if err != nil || req == nil {
		return err
	}
	_, err = ask(conf, req)
	if op := (*net.OpError)(nil); errors.As(err, &op) && op.Op == "dial" {
		// No node agent runs (stopped, or Ambit uninstalled): the pod's
		// namespace goes away with its rules, and a starting agent releases
		// pods that are gone; tearing a pod down must not wait for it, as
		// the runtime would retry DEL forever.
		return nil
	}
	return err
}

func cmdCheck(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if _, err := prevResult(conf); err != nil {
		return err
	}
	req, err := request(CmdCheck, args, conf)
	if err != nil || req == nil {
		return err
	}
	_, err = ask(conf, req)
	return err
}

func cmdStatus(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	// The node agent is running when it answers; a request for no pod is
	// refused by it, which is the answer we want.
	_, err = NewClient(conf.AgentSocket).Do(context.Background(), Request{Command: CmdCheck})
	if err != nil && strings.Contains(err.Error(), "names no pod") {
		return nil
	}
	// 50: "the plugin is not available" (CNI spec 1.1, STATUS).
	return types.NewError(50, "node agent not available", err.Error())
}

// PluginMain runs the plugin (cmd/ambit-cni).
func PluginMain() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, Status: cmdStatus},
		version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"), "Ambit ambient mesh CNI plugin (chained)")
}
