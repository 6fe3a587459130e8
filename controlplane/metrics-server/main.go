// Command wasmop-metrics-server is the embedded cluster's metrics-server
// (sigs.k8s.io/metrics-server), the aggregated metrics.k8s.io API that `kubectl top`
// and the HorizontalPodAutoscaler read. It is upstream's command unchanged, built in a
// module of its own because its k8s.io/* and etcd-client requirements would upgrade
// the control plane's under minimal version selection.
package main

import (
	"os"

	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"

	"sigs.k8s.io/metrics-server/cmd/metrics-server/app"
)

func main() {
	os.Exit(cli.Run(app.NewMetricsServerCommand(genericapiserver.SetupSignalHandler())))
}
