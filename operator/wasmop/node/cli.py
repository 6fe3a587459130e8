"""``wasmop node …``: run a wasm node agent, and inject faults into one."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from wasmop.console import CommandError, add_state_dir, layout_from
from wasmop.private_file import reset_private_dir


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from wasmop.node.agent import NodeAgent, NodeSettings
    from wasmop.node.host_plan import DEFAULT_IMAGES
    from wasmop.node.netns import NetworkError, NodeNetwork

    layout = layout_from(args)
    kubeconfig = args.kubeconfig
    tls = (args.tls_cert_file, args.tls_private_key_file, args.client_ca_file)
    if kubeconfig is None:
        from wasmop.cluster import manager

        try:
            address = NodeNetwork.for_node(args.name, args.pod_cidr).node_address
            issued = manager.issue_node_credentials(layout, args.name, address)
        except (manager.ClusterError, NetworkError) as exc:
            raise CommandError(str(exc)) from exc
        kubeconfig = issued.kubeconfig
        tls = (issued.serving_cert, issued.serving_key, issued.client_ca)
    elif any(tls) and not all(tls):
        raise CommandError(
            "--tls-cert-file, --tls-private-key-file and --client-ca-file go together"
        )
    labels = dict(item.split("=", 1) for item in args.label)
    cache_dir = layout.root / "module-cache"
    try:  # compiled native code is mapped from here: only this user may write it
        reset_private_dir(cache_dir)
    except PermissionError as exc:
        raise CommandError(f"unsafe module cache directory: {exc}") from exc
    settings = NodeSettings(
        name=args.name,
        pod_cidr=args.pod_cidr,
        kubeconfig=Path(kubeconfig),
        zone=args.zone,
        cpu=args.cpu,
        memory=args.memory,
        max_pods=args.max_pods,
        runtime_name=args.runtime,
        runtime_handler=args.runtime_handler,
        allowed_images=tuple(args.allowed_image) or DEFAULT_IMAGES,
        labels=labels,
        run_dir=layout.run,
        cache_dir=cache_dir,
        # Per node, as on a real cluster: each node pulls a module once for its Pods.
        content_dir=layout.root / "content" / args.name,
        registry_allow=tuple(args.registry_allow),
        module_url_allow=tuple(args.module_url_allow),
        module_url_deny=tuple(args.module_url_deny),
        pod_dir=layout.root / "nodes" / args.name / "pods",
        tls_cert=Path(tls[0]) if tls[0] else None,
        tls_key=Path(tls[1]) if tls[1] else None,
        client_ca=Path(tls[2]) if tls[2] else None,
    )
    try:
        settings.registry_policy()
    except ValueError as exc:
        raise CommandError(f"--module-url-allow/--module-url-deny: {exc}") from exc
    if args.lease_renew_seconds is not None:
        settings.lease_renew_s = args.lease_renew_seconds
    try:
        agent = NodeAgent(settings)
        asyncio.run(agent.run())
    except NetworkError as exc:
        raise CommandError(str(exc)) from exc
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    from wasmop.node import fault_client

    run_dir = layout_from(args).run
    try:
        if args.fault == "crash":
            namespace, _, pod = args.pod.rpartition("/")
            body = {"namespace": namespace or "default", "pod": pod}
            reply = fault_client.post(run_dir, args.node, "/faults/crash", body)
            print(f"crashed {reply['crashed']}")
        elif args.fault == "netem":
            body = {"delayMs": args.delay_ms, "lossPercent": args.loss_percent}
            reply = fault_client.post(run_dir, args.node, "/faults/netem", body)
            print(
                f"node {args.node}: delay {reply['delayMs']} ms, loss {reply['lossPercent']} %"
                f" ({reply['method']})"
            )
        else:
            info = fault_client.node_info(run_dir, args.node)
            sig = {"freeze": signal.SIGSTOP, "thaw": signal.SIGCONT, "kill": signal.SIGKILL}[
                args.fault
            ]
            os.kill(int(info["pid"]), sig)
            print(f"node {args.node}: sent {sig.name} to agent pid {info['pid']}")
    except fault_client.NodeUnavailable as exc:
        raise CommandError(str(exc)) from exc
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    node = subparsers.add_parser(
        "node",
        help="run a wasm node agent (virtual kubelet) or inject a fault into one",
        description="A wasm node agent registers a Node and runs the Pods bound to it as "
        "WebAssembly functions in wasmtime, each on its own address inside the node's "
        "network namespace. Needs root (network namespaces).",
    )
    add_state_dir(node)
    sub = node.add_subparsers(dest="node_command", metavar="<action>", required=True)

    run = sub.add_parser("run", help="run an agent in the foreground")
    run.add_argument("--name", required=True, help="Node name")
    run.add_argument(
        "--pod-cidr", required=True, help="the node's pod range, 10.244.N.0/24 (N=1..63)"
    )
    run.add_argument(
        "--zone", default="zone-a", help="topology.kubernetes.io/zone (default zone-a)"
    )
    run.add_argument("--cpu", default="2", help="CPU capacity to advertise (default 2)")
    run.add_argument("--memory", default="4Gi", help="memory capacity to advertise (default 4Gi)")
    run.add_argument("--max-pods", type=int, default=110, help="Pod capacity (default 110)")
    run.add_argument(
        "--lease-renew-seconds",
        type=float,
        help="how often the node's Lease is renewed, in seconds (default 0.5)",
    )
    run.add_argument("--runtime", default="wasmtime", help="runtime name label and taint value")
    run.add_argument(
        "--runtime-handler",
        choices=("wasmtime", "host-process"),
        default="wasmtime",
        help="wasmtime: run WebAssembly function Pods (default); host-process: run the"
        " project's own images (--allowed-image) as processes under cgroup limits (root)",
    )
    run.add_argument(
        "--allowed-image",
        action="append",
        default=[],
        metavar="REPOSITORY",
        help="an image a host-process node runs (default: wasmop/operator); its tag must be"
        " the installed wasmop version",
    )
    run.add_argument("--label", action="append", default=[], metavar="K=V", help="extra Node label")
    run.add_argument(
        "--kubeconfig",
        help="node credentials (default: a system:node:<name> certificate issued by the"
        " embedded cluster, with a kubelet serving certificate for the node's address)",
    )
    run.add_argument("--tls-cert-file", help="kubelet API serving certificate (with --kubeconfig)")
    run.add_argument("--tls-private-key-file", help="its key")
    run.add_argument(
        "--client-ca-file", help="CA of the client certificates the kubelet API accepts"
    )
    run.add_argument(
        "--registry-allow",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="a registry this node pulls from whatever its address (repeatable); others"
        " must pass the address policy (public addresses, see --module-url-allow)",
    )
    run.add_argument(
        "--module-url-allow",
        action="append",
        default=[],
        metavar="CIDR",
        help="also pull from registries in this range (repeatable; the operator's flag of"
        " the same name, which cluster up passes to both)",
    )
    run.add_argument(
        "--module-url-deny",
        action="append",
        default=[],
        metavar="CIDR",
        help="never pull from a registry not named by --registry-allow in this range",
    )
    run.set_defaults(handler=cmd_run)

    fault = sub.add_parser("fault", help="inject a fault into a running agent")
    fault_sub = fault.add_subparsers(dest="fault", metavar="<fault>", required=True)
    crash = fault_sub.add_parser("crash", help="crash one Pod's container")
    crash.add_argument("node")
    crash.add_argument("pod", help="namespace/name")
    netem = fault_sub.add_parser("netem", help="set delay and loss on the node's link (0 0 clears)")
    netem.add_argument("node")
    netem.add_argument("--delay-ms", type=float, default=0.0)
    netem.add_argument("--loss-percent", type=float, default=0.0)
    for name, text in (
        ("freeze", "stop the agent process (SIGSTOP): the node hangs"),
        ("thaw", "continue a frozen agent (SIGCONT)"),
        ("kill", "kill the agent process (SIGKILL)"),
    ):
        p = fault_sub.add_parser(name, help=text)
        p.add_argument("node")
    fault.set_defaults(handler=cmd_fault)
