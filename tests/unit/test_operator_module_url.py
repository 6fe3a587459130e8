"""spec.module.url cannot be turned against the platform: which addresses the operator
fetches from, no redirects, no second lookup, and nothing of what it saw in status.

The servers here listen on 127.0.0.1 and 127.0.0.2 (loopback only); the public addresses
below are only classified, never contacted.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from wasmop.netguard import AddressPolicy, AddressRefused
from wasmop.operator.module_url import FetchFailed, FetchTooLarge, ModuleUrlFetcher
from wasmop.operator.modules import ModuleUnavailable, concealed, fetch_module
from wasmop.operator.spec import WasmFunction
from wasmop.operator.validation import Problem, Reason

MODULE = b"\0asm\1\0\0\0"
BIG = MODULE + bytes(range(256)) * 8192  # 2 MiB, many reads' worth


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",  # loopback: the API server, etcd, the registry, the gateway
        "::1",
        "169.254.169.254",  # link-local: cloud instance metadata
        "fe80::1%1",
        "fd00:ec2::254",  # AWS metadata over IPv6 (unique local)
        "100.100.100.200",  # Alibaba metadata (shared address space)
        "10.244.1.5",  # the embedded cluster's pods
        "10.96.0.1",  # and services
        "192.168.1.1",
        "172.16.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::ffff:127.0.0.1",  # IPv4 inside IPv6: the IPv4 address is what is reached
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    ],
)
def test_the_platform_s_addresses_are_refused(address: str) -> None:
    assert AddressPolicy().refusal(address) is not None


def test_public_addresses_pass_and_administrators_adjust_the_ranges() -> None:
    assert AddressPolicy().refusal("8.8.8.8") is None
    assert AddressPolicy().refusal("2001:4860:4860::8888") is None
    sample = AddressPolicy.parse(allow=["127.0.0.1/32"])
    assert sample.refusal("127.0.0.1") is None
    assert sample.refusal("127.0.0.2") is not None
    # A cluster whose pod range is public denies it; deny wins over allow.
    cluster = AddressPolicy.parse(allow=["203.0.113.0/24"], deny=["203.0.113.0/25", "8.8.0.0/16"])
    assert cluster.refusal("8.8.8.8") is not None
    assert cluster.refusal("203.0.113.7") is not None
    assert cluster.refusal("203.0.113.200") is None
    with pytest.raises(ValueError):
        AddressPolicy.parse(allow=["not-a-range"])


@dataclass
class Site:
    """A tiny HTTP server on one loopback address, counting what it is asked for."""

    host: str
    port: int = 0
    hits: list[str] = field(default_factory=list)
    runner: web.AppRunner | None = None

    async def start(self, routes: dict[str, web.Response | str]) -> None:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.hits.append(request.path)
            answer = routes.get(request.path)
            if isinstance(answer, str):
                raise web.HTTPFound(answer)
            if answer is None:
                raise web.HTTPNotFound()
            return answer

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def sites() -> AsyncIterator[tuple[Site, Site]]:
    """One server on 127.0.0.2 and another on 127.0.0.1 on the same port."""
    good, other = Site("127.0.0.2"), Site("127.0.0.1")
    await good.start(
        {
            "/m.wasm": web.Response(body=MODULE),
            "/big.wasm": web.Response(body=MODULE * 1000),
            "/sqlite-sized.wasm": web.Response(body=BIG),
            "/moved.wasm": "http://127.0.0.1/secret",
        }
    )
    other.port = good.port
    await other.start({"/m.wasm": web.Response(body=b"not the module")})
    yield good, other
    await good.stop()
    await other.stop()


class ScriptedResolver(AbstractResolver):
    """Answers a name from a script, one answer per lookup: a DNS server that rebinds."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.lookups = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = self.answers[min(self.lookups, len(self.answers) - 1)]
        self.lookups += 1
        return [
            ResolveResult(
                hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        return None


async def test_loopback_is_refused_unless_allowed(sites: tuple[Site, Site]) -> None:
    good, other = sites
    fetcher = ModuleUrlFetcher(AddressPolicy())
    for url in (f"{other.url}/m.wasm", f"http://localhost:{other.port}/m.wasm"):
        with pytest.raises(AddressRefused):
            await fetcher.fetch(url)
    await fetcher.close()
    assert other.hits == []
    sample = ModuleUrlFetcher(AddressPolicy.parse(allow=["127.0.0.2/32"]))
    assert await sample.fetch(f"{good.url}/m.wasm") == MODULE
    await sample.close()


async def test_redirects_are_not_followed(sites: tuple[Site, Site]) -> None:
    good, other = sites
    fetcher = ModuleUrlFetcher(AddressPolicy.parse(allow=["127.0.0.0/8"]))
    with pytest.raises(FetchFailed) as failed:
        await fetcher.fetch(f"{good.url}/moved.wasm")
    await fetcher.close()
    assert "302" in failed.value.detail  # for the operator's log
    assert other.hits == []


async def test_the_connection_goes_to_the_address_that_was_checked(
    sites: tuple[Site, Site],
) -> None:
    """A name that first resolves to an allowed address and then to a refused one (DNS
    rebinding) is fetched from the checked address, and the rebound answer is refused."""
    good, other = sites
    resolver = ScriptedResolver("127.0.0.2", "127.0.0.1")
    fetcher = ModuleUrlFetcher(AddressPolicy.parse(allow=["127.0.0.2/32"]), resolver=resolver)
    url = f"http://modules.example.test:{good.port}/m.wasm"
    assert await fetcher.fetch(url) == MODULE
    with pytest.raises(AddressRefused):
        await fetcher.fetch(url)
    await fetcher.close()
    assert resolver.lookups == 2  # no cached answer: each connection is checked again
    assert good.hits == ["/m.wasm"]
    assert other.hits == []


async def test_a_size_limit(sites: tuple[Site, Site]) -> None:
    good, _ = sites
    whole = ModuleUrlFetcher(AddressPolicy.parse(allow=["127.0.0.2/32"]))
    assert await whole.fetch(f"{good.url}/sqlite-sized.wasm") == BIG  # every byte, not a read's
    await whole.close()
    fetcher = ModuleUrlFetcher(AddressPolicy.parse(allow=["127.0.0.2/32"]), max_bytes=len(MODULE))
    assert await fetcher.fetch(f"{good.url}/m.wasm") == MODULE
    with pytest.raises(FetchTooLarge):
        await fetcher.fetch(f"{good.url}/big.wasm")
    await fetcher.close()


def url_function(url: str, **module: str) -> WasmFunction:
    return WasmFunction.from_body(
        {
            "metadata": {"name": "fn", "namespace": "tenant"},
            "spec": {"module": {"url": url, **module}},
        }
    )


async def test_status_learns_nothing_of_what_the_operator_saw(
    sites: tuple[Site, Site],
) -> None:
    """A 404, a redirect and a closed port read the same in status: no HTTP code, no
    connection error, no address (the details go to the operator's log)."""
    good, _ = sites
    fetcher = ModuleUrlFetcher(AddressPolicy.parse(allow=["127.0.0.2/32"]))
    with socket.socket() as probe:
        probe.bind(("127.0.0.2", 0))
        closed_port = probe.getsockname()[1]
    messages = set()
    for url in (
        f"{good.url}/missing.wasm",
        f"{good.url}/moved.wasm",
        f"http://127.0.0.2:{closed_port}/m.wasm",
    ):
        with pytest.raises(ModuleUnavailable) as unavailable:
            await fetch_module(None, url_function(url), fetcher)  # type: ignore[arg-type]
        assert unavailable.value.reason == "ModuleFetchFailed"
        assert not unavailable.value.permanent
        messages.add(unavailable.value.message)
    [message] = messages
    for leak in ("404", "302", "127.0.0", str(good.port), str(closed_port), "refused"):
        assert leak not in message
    with pytest.raises(ModuleUnavailable) as refused:
        await fetch_module(None, url_function("http://169.254.169.254/m"), fetcher)  # type: ignore[arg-type]
    assert (refused.value.reason, refused.value.permanent) == ("ModuleURLNotAllowed", True)
    assert "169.254" not in refused.value.message
    await fetcher.close()


def test_a_url_module_s_verdict_does_not_quote_its_bytes() -> None:
    """Bytes that are not wasm are quoted in the verdict (``got b'<htm'``); for a module
    from a URL that would echo what the address served, so status gets a fixed text."""
    quoted = Problem("spec.module", Reason.MODULE_INVALID, "NotWasm: expected \\0asm, got b'<htm'")
    other = Problem("spec.module", Reason.MODULE_INCOMPATIBLE, "ForbiddenImport: env::f")
    [hidden, kept] = concealed([quoted, other])
    assert "<htm" not in hidden.message and hidden.reason == Reason.MODULE_INVALID
    assert kept == other
