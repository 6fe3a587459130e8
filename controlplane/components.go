package main

import (
	"fmt"
	"os"
	_ "time/tzdata" // CronJob time zones, as in the upstream binaries

	"go.etcd.io/etcd/server/v3/etcdmain"
	etcdversion "go.etcd.io/etcd/api/v3/version"

	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/component-base/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func runEtcd(args []string) int {
	// etcdmain exits the process itself on failure.
	etcdmain.Main(args)
	return 0
}

func runAPIServer(_ []string) int {
	return cli.Run(apiserver.NewAPIServerCommand())
}

func runControllerManager(_ []string) int {
	return cli.Run(controllermanager.NewControllerManagerCommand())
}

func runScheduler(_ []string) int {
	return cli.Run(scheduler.NewSchedulerCommand())
}

func runKubectl(args []string) int {
	// As upstream kubectl: honour -v before the command tree is built.
	_, _ = logs.GlogSetter(kubectlcmd.GetLogVerbosity(args))
	if err := cli.RunNoErrOutput(kubectlcmd.NewDefaultKubectlCommand()); err != nil {
		kubectlutil.CheckErr(err)
	}
	return 0
}

func runVersion(_ []string) int {
	fmt.Fprintf(os.Stdout, "kubernetes %s\netcd %s\n", version.Get().GitVersion, etcdversion.Version)
	return 0
}
