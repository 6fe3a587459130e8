"""The benchmark workloads described by functions/manifest.yaml, loadable from code.

Tests, samples and notebooks use this to find a workload's module, its suggested limits,
a sample request and a check of the response, so the manifest is the single place where
"what should `fib?n=20` answer" is written down.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from wasmop.runtime.abi import REASON_HEADER, Request
from wasmop.runtime.config import FunctionConfig, Limits

ENV_DIR = "WASMOP_FUNCTIONS_DIR"


def functions_dir() -> Path:
    """functions/ of this checkout ($WASMOP_FUNCTIONS_DIR overrides)."""
    override = os.environ.get(ENV_DIR)
    if override:
        return Path(override).resolve()
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "functions" / "manifest.yaml"
        if candidate.is_file():
            return candidate.parent
    candidate = Path.cwd() / "functions"
    if (candidate / "manifest.yaml").is_file():
        return candidate
    raise FileNotFoundError(
        f"functions/manifest.yaml not found; set {ENV_DIR} to the functions directory"
    )


@dataclass(frozen=True)
class SampleRequest:
    method: str = "GET"
    path: str = "/"
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SampleRequest:
        query = data.get("query", "")
        if isinstance(query, Mapping):
            query = urlencode(query)
        body = data.get("body", b"")
        return cls(
            method=str(data.get("method", "GET")).upper(),
            path=str(data.get("path", "/")),
            query=str(query),
            headers={str(k): str(v) for k, v in (data.get("headers") or {}).items()},
            body=body.encode() if isinstance(body, str) else bytes(body),
        )

    @property
    def target(self) -> str:
        """Path and query, as an HTTP client sends them."""
        return f"{self.path}?{self.query}" if self.query else self.path

    def to_request(self) -> Request:
        """The same request for in-process invocation."""
        return Request(
            method=self.method,
            path=self.path,
            query=self.query,
            headers=dict(self.headers),
            body=self.body,
        )


def _subset(expected: Any, actual: Any, where: str) -> list[str]:
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return [f"{where or 'body'}: expected an object, got {actual!r}"]
        problems: list[str] = []
        for key, value in expected.items():
            if key not in actual:
                problems.append(f"{where}.{key}: missing")
            else:
                problems += _subset(value, actual[key], f"{where}.{key}")
        return problems
    if expected != actual:
        return [f"{where or 'body'}: expected {expected!r}, got {actual!r}"]
    return []


@dataclass(frozen=True)
class Expectation:
    """A check of one response; `problems()` lists every mismatch (empty when it passes)."""

    status: int | None = None
    reason: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None
    body_contains: str | None = None
    body_regex: str | None = None
    json: Any = None
    json_len: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Expectation:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown expectation keys: {', '.join(sorted(unknown))}")
        values = dict(data)
        if "headers" in values:
            values["headers"] = {str(k): str(v) for k, v in values["headers"].items()}
        return cls(**values)

    def problems(
        self, status: int, headers: Mapping[str, str] | Iterable[tuple[str, str]], body: bytes
    ) -> list[str]:
        items = headers.items() if isinstance(headers, Mapping) else headers
        lowered = {k.lower(): v for k, v in items}
        problems: list[str] = []
        if self.status is not None and status != self.status:
            problems.append(f"status: expected {self.status}, got {status}")
        actual_reason = lowered.get(REASON_HEADER.lower())
        if self.reason is not None and actual_reason != self.reason:
            problems.append(f"reason: expected {self.reason!r}, got {actual_reason!r}")
        for name, value in self.headers.items():
            got = lowered.get(name.lower())
            if name.lower() == "content-type" and got is not None:
                got = got.split(";")[0].strip()
            if got != value:
                problems.append(f"header {name}: expected {value!r}, got {got!r}")
        text = body.decode("utf-8", errors="replace")
        if self.body is not None and text != self.body:
            problems.append(f"body: expected {self.body!r}, got {text[:200]!r}")
        if self.body_contains is not None and self.body_contains not in text:
            problems.append(f"body: {self.body_contains!r} not in {text[:200]!r}")
        if self.body_regex is not None and not re.search(self.body_regex, text):
            problems.append(f"body: no match for /{self.body_regex}/ in {text[:200]!r}")
        if self.json is not None or self.json_len:
            try:
                document = json.loads(text)
            except ValueError:
                return [*problems, f"body is not JSON: {text[:200]!r}"]
            if self.json is not None:
                problems += _subset(self.json, document, "")
            for key, length in self.json_len.items():
                value = document.get(key) if isinstance(document, Mapping) else None
                if not isinstance(value, list | dict | str) or len(value) != length:
                    problems.append(f"len({key}): expected {length}, got {value!r:.80}")
        return problems


@dataclass(frozen=True)
class Sample:
    name: str
    request: SampleRequest
    expect: Expectation


@dataclass(frozen=True)
class Workload:
    """One entry of the manifest."""

    name: str
    kind: str
    exercises: str
    build_dir: Path
    limits: Mapping[str, Any] = field(default_factory=dict)
    samples: tuple[Sample, ...] = ()
    check: Mapping[str, str] | None = None

    @property
    def wasm_path(self) -> Path:
        return self.build_dir / f"{self.name}.wasm"

    @property
    def is_fixture(self) -> bool:
        return self.kind == "fixture"

    def function_limits(self) -> Limits:
        return Limits.from_mapping(self.limits)

    def function_config(self, **overrides: Any) -> FunctionConfig:
        """A FunctionConfig named after the workload with its suggested limits."""
        overrides.setdefault("limits", self.function_limits())
        overrides.setdefault("name", self.name)
        return FunctionConfig(**overrides)

    def sample(self, name: str | None = None) -> Sample:
        if not self.samples:
            raise KeyError(f"workload {self.name} has no samples")
        if name is None:
            return self.samples[0]
        for sample in self.samples:
            if sample.name == name:
                return sample
        raise KeyError(f"workload {self.name} has no sample {name}")


@dataclass(frozen=True)
class Manifest:
    root: Path
    workloads: tuple[Workload, ...]

    @cached_property
    def by_name(self) -> dict[str, Workload]:
        return {w.name: w for w in self.workloads}

    def __getitem__(self, name: str) -> Workload:
        return self.by_name[name]

    def servable(self) -> list[Workload]:
        """Every module that passes the runtime's check (all but the bad fixtures)."""
        return [w for w in self.workloads if not w.check]

    def benchmarks(self) -> list[Workload]:
        """The benchmark workloads: everything that is not a test fixture."""
        return [w for w in self.workloads if not w.is_fixture]

    def missing(self) -> list[Path]:
        """Modules not built yet (run `make functions`)."""
        return [w.wasm_path for w in self.workloads if not w.wasm_path.is_file()]


def load_manifest(path: Path | str | None = None, build_dir: Path | str | None = None) -> Manifest:
    """Read functions/manifest.yaml (or `path`); modules are looked up in `build_dir`."""
    manifest_path = Path(path) if path is not None else functions_dir() / "manifest.yaml"
    root = manifest_path.resolve().parent
    build = Path(build_dir) if build_dir is not None else root / "build"
    data = yaml.safe_load(manifest_path.read_text())
    workloads = []
    for entry in data["workloads"]:
        samples = tuple(
            Sample(
                name=str(sample["name"]),
                request=SampleRequest.from_mapping(sample.get("request") or {}),
                expect=Expectation.from_mapping(sample.get("expect") or {}),
            )
            for sample in entry.get("samples", [])
        )
        workloads.append(
            Workload(
                name=entry["name"],
                kind=entry.get("kind", "basic"),
                exercises=entry.get("exercises", ""),
                build_dir=build,
                limits=dict(entry.get("limits") or {}),
                samples=samples,
                check=entry.get("check"),
            )
        )
    return Manifest(root=root, workloads=tuple(workloads))


def ensure_built(manifest: Manifest | None = None) -> Manifest:
    """Build the workloads with functions/build.py if any module is missing.

    `make functions` is the normal way; this lets `pytest tests/unit` work on its own.
    """
    manifest = manifest or load_manifest()
    if manifest.missing():
        subprocess.run(
            [sys.executable, str(manifest.root / "build.py")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    still_missing = manifest.missing()
    if still_missing:
        raise FileNotFoundError(f"workloads not built: {', '.join(map(str, still_missing))}")
    return manifest
