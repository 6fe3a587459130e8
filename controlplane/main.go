// Command wasmop-controlplane is the embedded Kubernetes control plane of wasmop.
//
// One binary carries every component, built from the upstream Go modules, so a machine
// without container images or release downloads can still run a real cluster. Each
// component runs as its own process (the first argument picks it), which keeps the
// process-global state of the components (feature gates, logging flags, metrics
// registries) apart exactly as in a normal cluster.
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

// component starts one control-plane program with its own command-line arguments.
type component struct {
	summary string
	run     func(args []string) int
}

var components = map[string]component{
	"etcd":                    {"embedded etcd (go.etcd.io/etcd/server/v3)", runEtcd},
	"kube-apiserver":          {"Kubernetes API server", runAPIServer},
	"kube-controller-manager": {"Kubernetes controller manager", runControllerManager},
	"kube-scheduler":          {"Kubernetes scheduler", runScheduler},
	"kubectl":                 {"Kubernetes command-line client", runKubectl},
	"version":                 {"print the Kubernetes and etcd versions built in", runVersion},
}

func usage() {
	names := make([]string, 0, len(components))
	for name := range components {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("usage: wasmop-controlplane <component> [flags]\n\n")
	b.WriteString("Runs one component of the embedded Kubernetes control plane. Components:\n")
	for _, name := range names {
		fmt.Fprintf(&b, "  %-24s %s\n", name, components[name].summary)
	}
	b.WriteString("\nEach component takes its upstream flags; see '<component> --help'.\n")
	fmt.Fprint(os.Stderr, b.String())
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		os.Exit(0)
	}
	name := os.Args[1]
	c, ok := components[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "wasmop-controlplane: unknown component %q\n\n", name)
		usage()
		os.Exit(2)
	}
	// Present the component with the argv it would see as its own binary.
	os.Args = append([]string{name}, os.Args[2:]...)
	os.Exit(c.run(os.Args))
}
