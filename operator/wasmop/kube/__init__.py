"""A small asyncio Kubernetes API client on aiohttp, with plain dicts for objects.

The node agents, the gateway and the benchmark watchers sit on hot paths (hundreds of
Pods, every status change), where a generated-model client spends most of its time
building and serialising model objects. This client speaks JSON dicts directly, supports
the credentials wasmop uses (client certificates, bearer tokens, in-cluster service
accounts) and offers list-then-watch with resume.
"""

from wasmop.kube.client import ApiError, Kube, KubeConfig, WatchEvent

__all__ = ["ApiError", "Kube", "KubeConfig", "WatchEvent"]
