"""``wasmop operator run|install``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from wasmop.console import CommandError, listen_address, run_until_signalled


def cmd_run(args: argparse.Namespace) -> int:
    import sys

    # The operator reaches the API through wasmop.kube. kopf would import the official
    # client just to offer logins through it (about 17 MiB for nothing): hide it.
    for client_module in ("kubernetes", "kubernetes_asyncio"):
        sys.modules.setdefault(client_module, None)  # type: ignore[arg-type]

    from wasmop.netguard import AddressPolicy
    from wasmop.operator.app import OperatorSettings, run

    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    gateway_url = args.gateway_url or os.environ.get(GATEWAY_URL_ENV) or default_gateway_url()
    service_mode = args.service_mode or os.environ.get(SERVICE_MODE_ENV) or "cluster-ip"
    if service_mode not in SERVICE_MODES:
        raise CommandError(f"{SERVICE_MODE_ENV}={service_mode!r}: use {' or '.join(SERVICE_MODES)}")
    settings = OperatorSettings(
        kubeconfig=str(args.kubeconfig) if args.kubeconfig else None,
        listen_address=listen_address(
            args.listen_address or ("0.0.0.0" if in_cluster else "127.0.0.1")
        ),
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        resync_interval_s=args.resync_interval,
        handler_timeout_s=args.handler_timeout,
        scaling_interval_s=args.scaling_interval,
        gateway_url=gateway_url,
        priority=args.priority,
        peering_identity=args.peering_identity or os.environ.get("POD_NAME") or None,
        namespaces=tuple(args.namespace),
        headless_services=service_mode == "headless",
        registry_allow=tuple(args.registry_allow) or registry_allow_from_env(),
        module_url_allow=tuple(args.module_url_allow),
        module_url_deny=tuple(args.module_url_deny),
    )
    try:
        AddressPolicy.parse(settings.module_url_allow, settings.module_url_deny)
    except ValueError as exc:
        raise CommandError(f"--module-url-allow/--module-url-deny: {exc}") from exc

    run_until_signalled(lambda stop: run(settings, stop))
    return 0


# Settings a cluster gives its operator Pod without changing the manifest: the Deployment
# reads them from the optional ConfigMap wasmop-operator-settings (envFrom); flags win.
GATEWAY_URL_ENV = "WASMOP_GATEWAY_URL"
SERVICE_MODE_ENV = "WASMOP_SERVICE_MODE"
SERVICE_MODES = ("cluster-ip", "headless")
REGISTRY_ALLOW_ENV = "WASMOP_REGISTRY_ALLOW"


def registry_allow_from_env() -> tuple[str, ...]:
    """Registries from ``$WASMOP_REGISTRY_ALLOW`` (comma-separated)."""
    return tuple(_env_list(REGISTRY_ALLOW_ENV))


def default_gateway_url() -> str:
    """The gateway's Service in the operator's own namespace when in a Pod, else
    loopback (where ``wasmop gateway run`` listens by default)."""
    from wasmop.kube.client import service_account_dir

    namespace_file = service_account_dir() / "namespace"
    if os.environ.get("KUBERNETES_SERVICE_HOST") and namespace_file.exists():
        return f"http://wasmop-gateway.{namespace_file.read_text().strip()}.svc:8000"
    return "http://127.0.0.1:8000"


def cmd_install(args: argparse.Namespace) -> int:
    import asyncio

    from wasmop.kube import Kube, KubeConfig
    from wasmop.operator.install import ManifestsMissing, apply_all, describe, manifests

    try:
        to_apply = manifests(
            function_namespaces=args.function_namespace, watch_namespaces=args.namespace
        )
    except ManifestsMissing as exc:
        raise CommandError(str(exc)) from exc
    if args.dry_run:
        for manifest in to_apply:
            print(manifest.path)
            for obj in manifest.objects:
                print(f"  {describe(obj)}")
        count = sum(len(m.objects) for m in to_apply)
        print(f"would apply {count} objects from {len(to_apply)} manifests (dry run)")
        return 0

    async def main() -> int:
        async with Kube(KubeConfig.load(args.kubeconfig), user_agent="wasmop-install") as kube:
            return await apply_all(kube, to_apply)

    count = asyncio.run(main())
    print(f"applied {count} objects (CRDs, RBAC, default WasmRuntime)")
    return 0


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    operator = subparsers.add_parser(
        "operator",
        help="run the WasmFunction/WasmRuntime operator (kopf), or install its CRDs and RBAC",
        description="The kopf operator: turns WasmFunctions into ConfigMaps, Deployments and "
        "Services, keeps their status, scales them, and reports WasmRuntimes' nodes.",
    )
    sub = operator.add_subparsers(dest="operator_command", metavar="<action>", required=True)
    run = sub.add_parser("run", help="run the operator in the foreground")
    run.add_argument(
        "--kubeconfig", type=Path, help="default: $KUBECONFIG, in-cluster, or the embedded cluster"
    )
    run.add_argument(
        "--listen-address", help="for metrics and health (default 127.0.0.1; 0.0.0.0 in a Pod)"
    )
    run.add_argument(
        "--metrics-port", type=int, default=8080, help="Prometheus metrics (default 8080)"
    )
    run.add_argument(
        "--health-port", type=int, default=8081, help="/healthz and /readyz (default 8081)"
    )
    run.add_argument(
        "--resync-interval", type=float, default=60.0, help="seconds between resyncs (default 60)"
    )
    run.add_argument(
        "--handler-timeout", type=float, default=300.0, help="seconds per handler (default 300)"
    )
    run.add_argument(
        "--scaling-interval", type=float, default=5.0, help="seconds between autoscaling passes"
    )
    run.add_argument(
        "--gateway-url",
        help=f"for status.url and request rates (default: ${GATEWAY_URL_ENV}; in a Pod the"
        " wasmop-gateway Service of its namespace; else http://127.0.0.1:8000)",
    )
    run.add_argument("--priority", type=int, help="kopf peering priority (default: random)")
    run.add_argument(
        "--peering-identity",
        help="this replica's name among peers; keep it across restarts (default: $POD_NAME,"
        " else one per process)",
    )
    run.add_argument("--namespace", action="append", default=[], help="watch only these namespaces")
    run.add_argument(
        "--service-mode",
        choices=SERVICE_MODES,
        help="the functions' Services: with a cluster IP (default, for kube-proxy), or"
        " headless where nothing routes cluster IPs (the embedded cluster); existing"
        f" Services keep theirs (default: ${SERVICE_MODE_ENV}, else cluster-ip)",
    )
    run.add_argument(
        "--registry-allow",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="a registry reached whatever its address (repeatable; the embedded cluster names"
        f" its own on loopback); others must have public addresses (default: ${REGISTRY_ALLOW_ENV},"
        " comma-separated)",
    )
    run.add_argument(
        "--module-url-allow",
        action="append",
        default=_env_list("WASMOP_MODULE_URL_ALLOW"),
        metavar="CIDR",
        help="also fetch spec.module.url (and reach registries) in this range, e.g."
        " 127.0.0.1/32 for the loopback sample (default: public addresses only;"
        " $WASMOP_MODULE_URL_ALLOW, comma-separated)",
    )
    run.add_argument(
        "--module-url-deny",
        action="append",
        default=_env_list("WASMOP_MODULE_URL_DENY"),
        metavar="CIDR",
        help="never fetch spec.module.url (nor reach a registry not named by"
        " --registry-allow) in this range, even if public (the cluster's own ranges where"
        " they are public; $WASMOP_MODULE_URL_DENY)",
    )
    run.set_defaults(handler=cmd_run)

    install = sub.add_parser("install", help="apply the CRDs, RBAC and default WasmRuntime")
    install.add_argument(
        "--kubeconfig", type=Path, help="default: $KUBECONFIG or the embedded cluster"
    )
    install.add_argument(
        "--dry-run",
        action="store_true",
        help="list every manifest and object it would apply, without a cluster",
    )
    install.add_argument(
        "--function-namespace",
        action="append",
        default=[],
        metavar="NS",
        help="a namespace where the operator may run WasmFunctions (repeat for more; default:"
        " default). Without it there, a function waits with reason NamespaceNotEnabled",
    )
    install.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="install for an operator run with --namespace NS: a Role in each such"
        " namespace instead of cluster-wide access (repeat for more)",
    )
    install.set_defaults(handler=cmd_install)
