"""The Kubernetes client against recorded API server exchanges replayed over real HTTP.

Each test scripts what the "API server" answers (recorded lists and watch streams, with
the faults a test needs spliced in) and checks both what the client yields and what it
asked for next: which resourceVersion it resumed from, whether it relisted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kube_replay import (
    Exchange,
    ReplayServer,
    items_of,
    kubeconfig,
    lines_of,
    list_version,
    version_of,
    watch,
)
from wasmop.kube import ApiError, Kube, KubeConfig, WatchEvent

PODS = "/api/v1/pods"
NODE_PODS = {"fieldSelector": "spec.nodeName=replay-node"}
FAST = {"retry_delay": 0.01}


def summary(events: list[WatchEvent]) -> list[tuple[str, str]]:
    return [(e.type, e.object["metadata"].get("name", "")) for e in events]


def watched(name: str) -> list[tuple[str, str]]:
    """(type, Pod name) of each recorded watch event a consumer sees (no bookmarks)."""
    events = [json.loads(line) for line in lines_of(name)]
    return [(e["type"], e["object"]["metadata"]["name"]) for e in events if e["type"] != "BOOKMARK"]


def listed(name: str) -> list[str]:
    return [item["metadata"]["name"] for item in items_of(name)]


def quiet_watch(version: str) -> Exchange:
    """A watch that stays open with nothing to say: where a test's script ends."""
    return watch(PODS, version, [], NODE_PODS, hold=True)


@contextlib.asynccontextmanager
async def client(server: ReplayServer) -> AsyncIterator[Kube]:
    async with Kube(KubeConfig(server=server.url)) as kube:
        yield kube


class Consumer:
    """Takes a stream's events in the background, as a component's watch task would."""

    def __init__(self, stream: AsyncIterator[WatchEvent]) -> None:
        self.stream = stream
        self.events: list[WatchEvent] = []
        self._arrived = asyncio.Condition()
        self.task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        async for event in self.stream:
            async with self._arrived:
                self.events.append(event)
                self._arrived.notify_all()

    async def until(self, count: int) -> list[WatchEvent]:
        """The first ``count`` events (fails the test after 5 s)."""
        try:
            async with self._arrived:
                await asyncio.wait_for(
                    self._arrived.wait_for(lambda: len(self.events) >= count), 5.0
                )
        except TimeoutError:
            if self.task.done() and self.task.exception():
                raise self.task.exception() from None  # type: ignore[misc]
            pytest.fail(f"{len(self.events)} of {count} events arrived: {summary(self.events)}")
        return self.events[:count]


@contextlib.asynccontextmanager
async def consume(stream: AsyncIterator[WatchEvent]) -> AsyncIterator[Consumer]:
    consumer = Consumer(stream)
    try:
        yield consumer
    finally:
        consumer.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await consumer.task


async def replayed(server: ReplayServer, count: int) -> list[WatchEvent]:
    """The first ``count`` events of a list-and-watch against ``server``, once every
    scripted request has been made, and made as scripted."""
    async with (
        client(server) as kube,
        consume(kube.list_and_watch(PODS, **FAST, **NODE_PODS)) as got,
    ):
        events = await got.until(count)
        await server.wait_for_requests(server.scripted)
    assert server.mismatches == []
    return events


async def stream_is_list_then_watch(server: ReplayServer) -> None:
    """The recorded list as ADDED, SYNCED, then the recorded watch's events, each once."""
    expected = [("ADDED", n) for n in listed("pods_list")] + [("SYNCED", "")]
    expected += watched("pods_watch")
    assert summary(await replayed(server, len(expected))) == expected


def relisted() -> int:
    """Events from the recorded list, a relist with the recorded changes, and a SYNCED
    after each."""
    before, after = listed("pods_list"), listed("pods_relist")
    return len(before) + len(after) + len([n for n in before if n not in after]) + 2


def pods_list() -> Exchange:
    return Exchange.recorded("pods_list")


def pods_watch(version: str, lines: list[str], **kw: Any) -> Exchange:
    return watch(PODS, version, lines, NODE_PODS, **kw)


# --- list, watch, resume ------------------------------------------------------------


async def test_list_then_watch_then_resume_from_the_last_bookmark() -> None:
    """Every listed object as ADDED, SYNCED, the watch's changes (bookmarks only move the
    version), and after the server ends the watch a new one from the last version seen."""
    lines = lines_of("pods_watch")
    assert json.loads(lines[-1])["type"] == "BOOKMARK", "the recording ends with a bookmark"
    script = [
        pods_list(),
        pods_watch(list_version("pods_list"), lines),
        quiet_watch(version_of(lines[-1])),
    ]
    async with ReplayServer(script) as server:
        await stream_is_list_then_watch(server)
        assert server.seen[2].query["resourceVersion"] == version_of(lines[-1])


@pytest.mark.parametrize(
    "garbage",
    [
        '{"type":"MODIFIED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"po',
        '{"type":"ADDED"}',
        '"a string"',
        '{"type":"MODIFIED","object":{"kind":"Pod","metadata":{"name":"pod-x"}}}',
        "\x00\x00\x00",
    ],
    ids=["truncated", "no-object", "not-an-event", "no-resource-version", "binary"],
)
async def test_a_garbled_line_resumes_the_watch_from_the_last_good_event(garbage: str) -> None:
    """The issue-12 reproduction: one bad line used to end list_and_watch with an uncaught
    JSONDecodeError. Now the rest of that response is not trusted, the watch resumes from
    the last event that parsed, and nothing is lost or seen twice."""
    lines = lines_of("pods_watch")
    first, rest = lines[:1], lines[1:]
    script = [
        pods_list(),
        pods_watch(list_version("pods_list"), [*first, garbage, *rest]),
        pods_watch(version_of(first[0]), rest),
        quiet_watch(version_of(lines[-1])),
    ]
    async with ReplayServer(script) as server:
        await stream_is_list_then_watch(server)


async def test_a_410_error_event_relists_and_reports_what_went_away() -> None:
    """A watch from a compacted version: the server says 410 Expired in an ERROR event.
    The client relists; objects that vanished meanwhile come out as DELETED."""
    [expired] = lines_of("pods_watch_expired")
    assert json.loads(expired)["object"]["code"] == 410
    script = [
        pods_list(),
        pods_watch(list_version("pods_list"), [expired]),
        Exchange.recorded("pods_relist"),
        quiet_watch(list_version("pods_relist")),
    ]
    before, after = listed("pods_list"), listed("pods_relist")
    expected = [("ADDED", n) for n in before] + [("SYNCED", "")]
    expected += [("DELETED", n) for n in before if n not in after]
    expected += [("MODIFIED" if n in before else "ADDED", n) for n in after]
    expected += [("SYNCED", "")]
    assert len(expected) == relisted()
    async with ReplayServer(script) as server:
        assert summary(await replayed(server, len(expected))) == expected


async def test_an_http_410_on_the_watch_request_relists() -> None:
    status = json.loads(lines_of("pods_watch_expired")[0])["object"]
    query = {**NODE_PODS, "watch": "1", "resourceVersion": list_version("pods_list")}
    script = [
        pods_list(),
        Exchange(PODS, query, status=410, body=status),
        Exchange.recorded("pods_relist"),
        quiet_watch(list_version("pods_relist")),
    ]
    async with ReplayServer(script) as server:
        events = await replayed(server, relisted())
    assert events[-1].type == "SYNCED"
    assert events[-1].object["metadata"]["resourceVersion"] == list_version("pods_relist")


async def test_a_forbidden_watch_is_retried_not_fatal() -> None:
    """A 403 (RBAC not there yet, say) ends nothing: the client waits and relists."""
    forbidden = Exchange.recorded("pods_watch_forbidden")
    assert forbidden.status == 403
    forbidden.query = {**NODE_PODS, "watch": "1"}
    script = [pods_list(), forbidden, Exchange.recorded("pods_relist")]
    script.append(quiet_watch(list_version("pods_relist")))
    async with ReplayServer(script) as server:
        events = await replayed(server, relisted())
    assert events[-1].type == "SYNCED"


async def test_an_api_server_restart_mid_watch_resumes_where_it_left_off() -> None:
    """The connection drops mid-stream, the server refuses connections for a while, then
    comes back: the client resumes from the last event it saw."""
    lines = lines_of("pods_watch")
    first, rest = lines[:1], lines[1:]
    script = [
        pods_list(),
        pods_watch(list_version("pods_list"), first, hold=True),
        pods_watch(version_of(first[0]), rest),
        quiet_watch(version_of(lines[-1])),
    ]
    async with ReplayServer(script) as server, client(server) as kube:
        listed_count = len(listed("pods_list")) + 1
        async with consume(kube.list_and_watch(PODS, **FAST, **NODE_PODS)) as got:
            await got.until(listed_count + 1)
            await server.go_away()
            await asyncio.sleep(0.1)  # a few refused reconnections
            await server.come_back()
            events = await got.until(listed_count + len(watched("pods_watch")))
            await server.wait_for_requests(4)
        assert summary(events[listed_count:]) == watched("pods_watch")
        assert server.seen[2].query["resourceVersion"] == version_of(first[0])
        assert server.mismatches == []


async def test_a_failed_list_is_retried() -> None:
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500,
              "reason": "InternalError", "message": "etcdserver: leader changed"}  # fmt: skip
    script = [Exchange(PODS, NODE_PODS, status=500, body=status), pods_list()]
    script.append(quiet_watch(list_version("pods_list")))
    async with ReplayServer(script) as server:
        events = await replayed(server, len(listed("pods_list")) + 1)
    assert events[-1].type == "SYNCED"


async def test_a_restarted_watch_reports_what_went_away_while_it_was_down() -> None:
    """A consumer that keeps ``known`` across restarts of its watch (as a supervised
    watch does) is told about deletions it would otherwise never see."""
    script = [pods_list(), quiet_watch(list_version("pods_list")), Exchange.recorded("pods_relist")]
    script.append(quiet_watch(list_version("pods_relist")))
    known: dict[str, dict[str, Any]] = {}
    async with ReplayServer(script) as server, client(server) as kube:
        first = kube.list_and_watch(PODS, known=known, **FAST, **NODE_PODS)
        async with consume(first) as got:
            await got.until(len(listed("pods_list")) + 1)
        before, after = listed("pods_list"), listed("pods_relist")
        second = kube.list_and_watch(PODS, known=known, **FAST, **NODE_PODS)
        async with consume(second) as got:
            events = await got.until(len(after) + len([n for n in before if n not in after]) + 1)
        assert ("DELETED", "pod-b") in summary(events)
        assert sorted(o["metadata"]["name"] for o in known.values()) == sorted(after)
        assert server.mismatches == []


async def test_progress_is_reported_for_every_answer_bookmarks_included() -> None:
    """What a staleness check counts on: the list, the watch accepted, each bookmark."""
    bookmarks = [line for line in lines_of("endpointslices_watch") if '"BOOKMARK"' in line]
    script = [pods_list(), pods_watch(list_version("pods_list"), bookmarks, hold=True)]
    heard: list[int] = []
    async with ReplayServer(script) as server, client(server) as kube:
        stream = kube.list_and_watch(PODS, on_progress=lambda: heard.append(1), **FAST, **NODE_PODS)
        async with consume(stream) as got:
            await got.until(len(listed("pods_list")) + 1)
            deadline = asyncio.get_running_loop().time() + 5
            while len(heard) < 2 + len(bookmarks):
                assert asyncio.get_running_loop().time() < deadline, f"progress: {heard}"
                await asyncio.sleep(0.01)
        assert got.events[-1].type == "SYNCED"  # bookmarks are not events for the consumer
        assert server.mismatches == []


# --- one watch request --------------------------------------------------------------


async def test_watch_raises_the_error_event_as_api_error() -> None:
    script = [pods_watch("1", lines_of("pods_watch_expired"))]
    async with ReplayServer(script) as server, client(server) as kube:
        with pytest.raises(ApiError) as caught:
            async for _ in kube.watch(PODS, "1", **NODE_PODS):
                pass
        assert caught.value.gone and caught.value.reason == "Expired"


async def test_watch_sends_the_version_bookmarks_and_timeout() -> None:
    script = [pods_watch("42", [])]
    async with ReplayServer(script) as server, client(server) as kube:
        async for _ in kube.watch(PODS, "42", timeout_seconds=7, **NODE_PODS):
            pass
        [seen] = server.seen
        assert seen.query["allowWatchBookmarks"] == "true"
        assert seen.query["timeoutSeconds"] == "7"
        assert server.mismatches == []


# --- kubeconfig -----------------------------------------------------------------------


def test_paths_in_a_kubeconfig_are_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    path = kubeconfig(
        tmp_path / "config",
        "https://127.0.0.1:6443/",
        {"client-certificate": "pki/user.crt", "client-key": "pki/user.key"},
        {"certificate-authority": "pki/ca.crt"},
    )
    config = KubeConfig.from_file(path)
    assert config.server == "https://127.0.0.1:6443"
    assert config.ca_file == str(tmp_path / "pki" / "ca.crt")
    assert config.cert_file == str(tmp_path / "pki" / "user.crt")
    assert config.key_file == str(tmp_path / "pki" / "user.key")
    assert (config.namespace, config.user) == ("ns", "tester")


def test_a_kubeconfig_without_its_context_is_refused(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", "https://127.0.0.1:6443", {"token": "t"}, {})
    with pytest.raises(ValueError, match="context 'other' not found"):
        KubeConfig.from_file(path, context="other")


def test_exec_plugins_are_refused_with_a_way_out(tmp_path: Path) -> None:
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws"}}
    path = kubeconfig(tmp_path / "config", "https://127.0.0.1:6443", user, {})
    with pytest.raises(ValueError, match="client certificate or token"):
        KubeConfig.from_file(path)


def test_kubeconfig_env_uses_the_first_file_of_a_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = kubeconfig(tmp_path / "first", "https://127.0.0.1:1", {"token": "a"}, {})
    second = kubeconfig(tmp_path / "second", "https://127.0.0.1:2", {"token": "b"}, {})
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    assert KubeConfig.load().server == "https://127.0.0.1:1"
    assert KubeConfig.load(second).server == "https://127.0.0.1:2"  # an explicit path wins


def test_in_cluster_config_reads_the_service_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wasmop.kube import client as kube_client

    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "namespace").write_text("wasm-operators\n")
    monkeypatch.setattr(kube_client, "SERVICE_ACCOUNT_DIR", tmp_path)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    config = KubeConfig.load()
    assert config.server == "https://[fd00::1]:443"
    assert config.namespace == "wasm-operators"
    assert config.ca_file == str(tmp_path / "ca.crt")
    assert config.bearer_token() == "sa-token"


async def test_a_token_is_sent_as_bearer(tmp_path: Path) -> None:
    async with ReplayServer([Exchange("/version", body={"gitVersion": "v1"})]) as server:
        path = kubeconfig(tmp_path / "config", server.url, {"token": "s3cret"}, {})
        async with Kube(KubeConfig.from_file(path)) as kube:
            assert await kube.get("/version") == {"gitVersion": "v1"}
        assert server.seen[0].headers["Authorization"] == "Bearer s3cret"


async def test_a_token_file_is_read_again_once_it_may_have_rotated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wasmop.kube import client as kube_client

    token = tmp_path / "token"
    token.write_text("first\n")
    script = [Exchange("/version", body={}) for _ in range(3)]
    async with ReplayServer(script) as server:
        path = kubeconfig(tmp_path / "config", server.url, {"tokenFile": "token"}, {})
        async with Kube(KubeConfig.from_file(path)) as kube:
            await kube.get("/version")
            token.write_text("second\n")
            await kube.get("/version")  # within the re-read interval: the cached token
            monkeypatch.setattr(kube_client, "TOKEN_REREAD_S", 0.0)
            await kube.get("/version")
        sent = [seen.headers["Authorization"] for seen in server.seen]
        assert sent == ["Bearer first", "Bearer first", "Bearer second"]


@pytest.mark.parametrize("inline", [False, True], ids=["files", "inline-data"])
async def test_client_certificates_from_files_or_inline_data(tmp_path: Path, inline: bool) -> None:
    """Mutual TLS against a server that, like kube-apiserver, demands a client certificate
    signed by its CA, with the CA and the client's key pair given either way."""
    import base64

    from kube_replay import tls_files

    tls = tls_files(tmp_path)

    def data(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    if inline:
        user = {"client-certificate-data": data(tls.client_cert),
                "client-key-data": data(tls.client_key)}  # fmt: skip
        cluster = {"certificate-authority-data": data(tls.ca)}
    else:
        user = {"client-certificate": tls.client_cert.name, "client-key": tls.client_key.name}
        cluster = {"certificate-authority": tls.ca.name}
    script = [Exchange("/version", body={"gitVersion": "v1.36.5"})]
    async with ReplayServer(script, tls=tls.server_context()) as server:
        path = kubeconfig(tmp_path / "config", server.url, user, cluster)
        async with Kube(KubeConfig.from_file(path)) as kube:
            assert (await kube.get("/version"))["gitVersion"] == "v1.36.5"


async def test_insecure_skip_tls_verify_accepts_an_unknown_server(tmp_path: Path) -> None:
    from kube_replay import tls_files

    tls = tls_files(tmp_path)
    context = tls.server_context()
    context.verify_mode = __import__("ssl").CERT_NONE  # no client certificate needed here
    async with ReplayServer([Exchange("/version", body={})], tls=context) as server:
        path = kubeconfig(
            tmp_path / "config", server.url, {"token": "t"}, {"insecure-skip-tls-verify": True}
        )
        async with Kube(KubeConfig.from_file(path)) as kube:
            assert await kube.get("/version") == {}


async def test_a_failed_list_the_caller_gives_up_on_ends_the_stream() -> None:
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
              "reason": "Forbidden", "message": "configmaps is forbidden"}  # fmt: skip
    script = [Exchange(PODS, NODE_PODS, status=403, body=status)]
    async with ReplayServer(script) as server, client(server) as kube:
        stream = kube.list_and_watch(
            PODS, give_up=lambda exc: isinstance(exc, ApiError) and exc.status == 403,
            **FAST, **NODE_PODS,
        )  # fmt: skip
        with pytest.raises(ApiError) as caught:
            await asyncio.wait_for(anext(stream), 5.0)
    assert caught.value.status == 403
