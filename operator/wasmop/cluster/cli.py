"""``wasmop cluster …`` and ``wasmop kubectl …``."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from wasmop.cluster.layout import StateLayout, active_kubeconfig, controlplane_binary
from wasmop.console import CommandError, add_state_dir, layout_from


def _wrap(func):  # type: ignore[no-untyped-def]
    """Turn ClusterError into the CLI's one-line error."""

    def handler(args: argparse.Namespace) -> int:
        from wasmop.cluster.manager import ClusterError

        try:
            return func(args)
        except ClusterError as exc:
            raise CommandError(str(exc)) from exc

    return handler


def _env_lines(layout: StateLayout) -> list[str]:
    return [f"export KUBECONFIG={shlex.quote(str(layout.admin_kubeconfig))}"]


def cmd_up(args: argparse.Namespace) -> int:
    from wasmop.cluster import manager

    layout = layout_from(args)
    result = manager.up(
        layout,
        fresh=args.fresh,
        timeout=args.timeout,
        progress=lambda msg: print(f"  {msg}", file=sys.stderr),
        api_port=args.api_port,
        node_monitor_grace_seconds=args.node_monitor_grace_seconds,
        not_ready_toleration_seconds=args.toleration_seconds,
        unreachable_toleration_seconds=args.toleration_seconds,
        etcd_fsync=False if args.no_fsync else None,
        nodes=args.nodes,
        max_pods=args.max_pods,
        module_url_allow=tuple(args.module_url_allow) if args.module_url_allow else None,
    )
    if result.already_running:
        print(f"the cluster in {layout.root} is already running", file=sys.stderr)
        running = manager.load_settings(layout)
        if args.nodes is not None and args.nodes != running.nodes:
            print(
                f"  it runs {running.nodes} wasm nodes; 'wasmop cluster down' first to change that",
                file=sys.stderr,
            )
        if args.max_pods is not None and args.max_pods != running.max_pods:
            print(
                f"  its nodes take {running.max_pods} Pods each; 'wasmop cluster down' first"
                " to change that",
                file=sys.stderr,
            )
    else:
        print(f"cluster ready in {result.seconds:.1f} s", file=sys.stderr)
    print("use it with:\n  " + "\n  ".join(_env_lines(layout)), file=sys.stderr)
    print("  wasmop kubectl get nodes", file=sys.stderr)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from wasmop.cluster import manager

    layout = layout_from(args)
    stopped = manager.down(layout)
    print("cluster stopped" if stopped else "no cluster was running", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from wasmop.cluster import manager

    layout = layout_from(args)
    status = manager.read_status(layout)
    pid = manager.supervisor_pid(layout)
    if pid is None or status is None:
        print(f"not running (state dir {layout.root})")
        return 3
    print(f"{status['state']} (supervisor pid {pid}, state dir {layout.root})")
    print(f"{'COMPONENT':<26}{'STATE':<12}{'PID':>8}{'RESTARTS':>10}  ADDRESS")
    for name, comp in status["components"].items():
        pid_text = str(comp["pid"] or "-")
        address = comp.get("address") or "-"
        print(f"{name:<26}{comp['state']:<12}{pid_text:>8}{comp['restarts']:>10}  {address}")
    if status["state"] == "running":
        try:
            services = manager.aggregated_apis(layout)
        except manager.ClusterError as exc:
            print(f"\naggregated APIs: unknown ({exc})")
        else:
            print(f"\n{'APISERVICE':<26}{'AVAILABLE':<11}{'REASON':<24}MESSAGE")
            for api in services:
                print(f"{api.name:<26}{api.available:<11}{api.reason:<24}{api.message}")
    return 0 if status["state"] == "running" else 1


def cmd_env(args: argparse.Namespace) -> int:
    print("\n".join(_env_lines(layout_from(args))))
    return 0


def cmd_component(args: argparse.Namespace) -> int:
    from wasmop.cluster import manager

    fields = {"name": args.component}
    if args.action == "stop" and args.kill:
        fields["signal"] = "KILL"
    reply = manager.control(layout_from(args), args.action, **fields)
    comp = reply["component"]
    print(f"{args.component}: {comp['state']} (pid {comp['pid'] or '-'})")
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    """kill, freeze, partition, heal: faults for experiments and by hand."""
    from wasmop.cluster import manager

    layout = layout_from(args)
    if args.action in ("partition", "heal"):
        manager.partition_node(layout, args.component, cut=args.action == "partition")
        print(f"{args.component}: link {'cut' if args.action == 'partition' else 'restored'}")
        return 0
    fields: dict[str, object] = {"name": args.component}
    if args.action == "freeze":
        fields["seconds"] = args.seconds
    comp = manager.control(layout, args.action, **fields)["component"]
    print(f"{args.component}: {comp['state']} (pid {comp['pid'] or '-'})")
    return 0


def cmd_node_credentials(args: argparse.Namespace) -> int:
    from wasmop.cluster import manager

    issued = manager.issue_node_credentials(layout_from(args), args.node, args.address)
    print(f"kubeconfig: {issued.kubeconfig}")
    print(f"serving certificate: {issued.serving_cert}")
    print(f"serving key: {issued.serving_key}")
    print(f"client CA: {issued.client_ca}")
    return 0


def run_kubectl(kubectl_args: list[str]) -> int:
    """Replace this process with the built-in kubectl on the active kubeconfig."""
    binary = controlplane_binary()
    if not binary.exists():
        sys.stderr.write(
            f"wasmop: error: kubectl is part of the control plane binary ({binary}):"
            " run 'make controlplane'\n"
        )
        return 1
    argv = [str(binary), "kubectl", f"--kubeconfig={active_kubeconfig()}", *kubectl_args]
    sys.stdout.flush()
    os.execv(str(binary), argv)
    return 0  # not reached


def cmd_kubectl(args: argparse.Namespace) -> int:
    return run_kubectl(args.kubectl_args)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    state = argparse.ArgumentParser(add_help=False)
    add_state_dir(state)

    cluster = subparsers.add_parser(
        "cluster",
        help="start, stop and inspect the embedded Kubernetes cluster",
        description="The embedded cluster: etcd, kube-apiserver, kube-controller-manager and "
        "kube-scheduler from controlplane/, supervised in the background, listening on "
        "127.0.0.1 only, with state under the state directory.",
    )
    sub = cluster.add_subparsers(dest="cluster_command", metavar="<action>", required=True)

    up = sub.add_parser("up", parents=[state], help="start the cluster and wait until it is ready")
    up.add_argument("--fresh", action="store_true", help="wipe the state dir first (all objects)")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (default 120)")
    up.add_argument("--api-port", type=int, help="kube-apiserver port (default 6443)")
    up.add_argument(
        "--nodes",
        type=int,
        help="wasm node agents to run (default 2: a failed node can evict to the other)",
    )
    up.add_argument(
        "--max-pods",
        type=int,
        help="Pods each node takes (default 110, the kubelet's; a wasm Pod costs about"
        " 0.3 MiB, so up to 245 fit a node's address range)",
    )
    up.add_argument(
        "--module-url-allow",
        action="append",
        metavar="CIDR",
        help="let the operator fetch spec.module.url, and the operator and node agents pull"
        " from registries, in this range too (repeat for more), e.g. 127.0.0.1/32 for"
        " operator/config/samples/hello-url.yaml; default: public addresses only",
    )
    up.add_argument(
        "--node-monitor-grace-seconds",
        type=int,
        help="seconds without a Lease renewal before a node is NotReady (default 4; upstream 50)",
    )
    up.add_argument(
        "--toleration-seconds",
        type=int,
        help="default not-ready/unreachable toleration of Pods (default 2; upstream 300)",
    )
    up.add_argument(
        "--no-fsync", action="store_true", help="run etcd without fsync (faster, not durable)"
    )
    up.set_defaults(handler=_wrap(cmd_up))

    down = sub.add_parser("down", parents=[state], help="stop every process of the cluster")
    down.set_defaults(handler=_wrap(cmd_down))

    status = sub.add_parser("status", parents=[state], help="show the components and their state")
    status.set_defaults(handler=_wrap(cmd_status))

    env = sub.add_parser(
        "env",
        parents=[state],
        help='print shell exports for the cluster (eval "$(wasmop cluster env)")',
    )
    env.set_defaults(handler=_wrap(cmd_env))

    for action, text in (
        ("stop", "stop one component and keep it stopped (fault injection)"),
        ("start", "start a component stopped with 'stop'"),
        ("restart", "restart one component"),
    ):
        p = sub.add_parser(action, parents=[state], help=text)
        p.add_argument("component", help="e.g. kube-apiserver (see 'wasmop cluster status')")
        if action == "stop":
            p.add_argument("--kill", action="store_true", help="SIGKILL instead of SIGTERM")
        p.set_defaults(handler=_wrap(cmd_component), action=action)

    faults = {
        "kill": "SIGKILL a component as a crash; the supervisor starts it again",
        "freeze": "SIGSTOP a component, and SIGCONT it after --seconds",
        "thaw": "end a freeze now",
        "partition": "cut a wasm node's link (its agent keeps running)",
        "heal": "restore a wasm node's link cut with 'partition'",
    }
    for action, text in faults.items():
        p = sub.add_parser(action, parents=[state], help=text)
        what = "a wasm node, e.g. wasm-node-1" if action in ("partition", "heal") else "a component"
        p.add_argument("component", help=what + " (see 'wasmop cluster status')")
        if action == "freeze":
            p.add_argument("--seconds", type=float, default=5.0, help="how long (default 5)")
        p.set_defaults(handler=_wrap(cmd_fault), action=action)

    creds = sub.add_parser(
        "node-credentials",
        parents=[state],
        help="issue a system:node:<name> client certificate and a kubelet serving"
        " certificate; print their paths",
    )
    creds.add_argument("node", help="node name")
    creds.add_argument(
        "--address", required=True, help="the node's InternalIP (the serving certificate's IP SAN)"
    )
    creds.set_defaults(handler=_wrap(cmd_node_credentials))

    kubectl = subparsers.add_parser(
        "kubectl",
        help="kubectl (built in) against $KUBECONFIG or the embedded cluster",
        description="Runs the kubectl built into the control plane binary with the active "
        "kubeconfig: $KUBECONFIG when set, else the embedded cluster's admin kubeconfig.",
        add_help=False,
    )
    kubectl.add_argument("kubectl_args", nargs=argparse.REMAINDER)
    kubectl.set_defaults(handler=cmd_kubectl)
