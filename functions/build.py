"""Build the benchmark workloads in functions/manifest.yaml to functions/build/<name>.wasm.

`make functions` runs this with the project's venv. The only toolchain is the `ziglang`
package from PyPI (a dev extra in pyproject.toml), which compiles C to wasm32-wasi with
its own wasi-libc, so a fresh machine needs nothing else; third-party sources come from a
registry through its ordinary client (`npm pack`) and are pinned by version and sha256.

Each output is rebuilt only when a stamp over everything that goes into it (compiler
version, flags, source contents) changes, so a second run does no work.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
DEFAULT_OUT = HERE / "build"
MANIFEST = HERE / "manifest.yaml"

# Bump when the build logic changes in a way the stamps cannot see.
BUILD_REVISION = "1"
TARGET = "wasm32-wasi"
# -s strips debug info (a hello module: ~1 MB unstripped, ~2 KB stripped). A 1 MiB shadow
# stack instead of the toolchain's 16 MiB keeps the initial linear memory small.
DEFAULT_CFLAGS = ["-O2", "-s", "-Wall", "-Wl,-z,stack-size=1048576"]

log = logging.getLogger("functions.build")


class BuildError(Exception):
    """A workload could not be built; the message says which and why."""


@dataclass
class ThirdParty:
    """Sources fetched from a package registry and verified before use."""

    npm: str
    files: dict[str, dict[str, str]]
    compile: list[str] = field(default_factory=list)

    def directory(self, out: Path) -> Path:
        return out / "_deps" / self.npm.replace("/", "_").replace("@", "-")


@dataclass(frozen=True)
class Generated:
    """A data file the build makes: ``size`` bytes of SHAKE-256 of ``seed`` (deterministic,
    and incompressible, which is the point: it stands for code and data that gzip cannot
    shrink)."""

    file: str
    size: int
    seed: str

    def stamp(self) -> str:
        return f"{self.file}:{self.size}:{self.seed}"

    def write(self, directory: Path) -> None:
        path = directory / self.file
        marker = directory / f".{self.file}.stamp"
        if path.is_file() and marker.is_file() and marker.read_text() == self.stamp():
            return
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / f".{self.file}.partial"
        partial.write_bytes(hashlib.shake_256(self.seed.encode()).digest(self.size))
        partial.replace(path)
        marker.write_text(self.stamp())


@dataclass
class Target:
    name: str
    sources: list[str] = field(default_factory=list)
    copy: str | None = None
    cflags: list[str] = field(default_factory=list)
    ldflags: list[str] = field(default_factory=list)
    third_party: ThirdParty | None = None
    generated: list[Generated] = field(default_factory=list)

    @classmethod
    def from_manifest(cls, entry: dict[str, Any]) -> Target:
        third = entry.get("third_party")
        return cls(
            name=entry["name"],
            sources=list(entry.get("sources", [])),
            copy=entry.get("copy"),
            cflags=list(entry.get("cflags", [])),
            ldflags=list(entry.get("ldflags", [])),
            generated=[
                Generated(file=g["file"], size=int(g["bytes"]), seed=str(g["seed"]))
                for g in entry.get("generated", [])
            ],
            third_party=ThirdParty(
                npm=third["npm"], files=third["files"], compile=list(third.get("compile", []))
            )
            if third
            else None,
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def zig_command() -> list[str]:
    return [sys.executable, "-m", "ziglang"]


def zig_version() -> str:
    try:
        result = subprocess.run(
            [*zig_command(), "version"], check=True, capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BuildError(
            "the ziglang package is missing from this Python "
            f"({sys.executable}); run `make venv` (it is in the dev extra)"
        ) from exc
    return result.stdout.strip()


def fetch_third_party(third: ThirdParty, out: Path) -> Path:
    """Unpack the pinned files of an npm package into build/_deps/, verifying sha256."""
    dest = third.directory(out)
    wanted = {name: spec for name, spec in third.files.items()}

    def verified() -> bool:
        for name, spec in wanted.items():
            path = dest / name
            if not path.is_file():
                return False
            if "sha256" in spec and sha256_file(path) != spec["sha256"]:
                return False
        return True

    if verified():
        return dest
    if shutil.which("npm") is None:
        raise BuildError(f"npm is needed to fetch {third.npm} (install Node.js)")
    log.info("fetching %s with npm pack", third.npm)
    with tempfile.TemporaryDirectory(prefix="wasmop-npm-") as tmp:
        result = subprocess.run(
            ["npm", "pack", third.npm, "--pack-destination", tmp, "--silent"],
            capture_output=True,
            text=True,
            cwd=tmp,
        )
        if result.returncode != 0:
            raise BuildError(f"npm pack {third.npm} failed: {result.stderr.strip()}")
        tarballs = list(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise BuildError(f"npm pack {third.npm} produced {len(tarballs)} tarballs")
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarballs[0], "r:gz") as archive:
            for name, spec in wanted.items():
                member = archive.getmember(spec["path"])  # only the listed paths, by name
                source = archive.extractfile(member)
                if source is None:
                    raise BuildError(f"{third.npm}: {spec['path']} is not a regular file")
                partial = dest / f".{name}.partial"
                with partial.open("wb") as target:
                    shutil.copyfileobj(source, target)
                if "sha256" in spec and sha256_file(partial) != spec["sha256"]:
                    partial.unlink()
                    raise BuildError(
                        f"{third.npm}: {spec['path']} does not match the pinned sha256; "
                        "refusing to build from unverified sources"
                    )
                partial.replace(dest / name)
    return dest


def stamp_for(target: Target, zig: str, deps: Path | None) -> str:
    """A digest of every input of one output; equal stamps mean nothing to rebuild."""
    digest = hashlib.sha256()
    parts: list[str] = [BUILD_REVISION, zig, TARGET, *DEFAULT_CFLAGS, "|", *target.cflags]
    parts += ["|", *target.ldflags, "|", *(g.stamp() for g in target.generated)]
    for part in parts:
        digest.update(part.encode() + b"\0")
    inputs = [SRC / name for name in target.sources]
    if target.copy:
        inputs.append(SRC / target.copy)
    if target.sources:
        inputs.append(SRC / "wagi.h")
    if target.third_party and deps is not None:
        inputs += [deps / name for name in sorted(target.third_party.files)]
    for path in inputs:
        digest.update(path.name.encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def build_one(target: Target, out: Path, zig: str, force: bool) -> tuple[str, bool, float]:
    """Build one target; returns (name, rebuilt, seconds)."""
    started = time.perf_counter()
    deps = fetch_third_party(target.third_party, out) if target.third_party else None
    output = out / f"{target.name}.wasm"
    stamp_path = out / ".stamps" / f"{target.name}.stamp"
    stamp = stamp_for(target, zig, deps)
    if (
        not force
        and output.is_file()
        and stamp_path.is_file()
        and stamp_path.read_text().strip() == stamp
    ):
        return target.name, False, time.perf_counter() - started

    partial = out / f".{target.name}.wasm.partial"
    if target.copy:
        shutil.copyfile(SRC / target.copy, partial)
    else:
        sources = [str(SRC / name) for name in target.sources]
        includes = ["-I", str(SRC)]
        if target.generated:
            data_dir = out / "_deps" / "generated" / target.name
            for generated in target.generated:
                generated.write(data_dir)
            includes += [f"--embed-dir={data_dir}"]
        if deps is not None and target.third_party is not None:
            includes += ["-I", str(deps)]
            sources += [str(deps / name) for name in target.third_party.compile]
        command = [
            *zig_command(),
            "cc",
            f"--target={TARGET}",
            *DEFAULT_CFLAGS,
            *target.cflags,
            *includes,
            *sources,
            *target.ldflags,
            "-o",
            str(partial),
        ]
        log.info("compiling %s", target.name)
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            raise BuildError(f"{target.name}: zig cc failed:\n{result.stderr.strip()}")
    partial.replace(output)
    stamp_path.parent.mkdir(parents=True, exist_ok=True)
    stamp_path.write_text(stamp + "\n")
    return target.name, True, time.perf_counter() - started


def load_targets(manifest: Path = MANIFEST) -> list[Target]:
    data = yaml.safe_load(manifest.read_text())
    return [Target.from_manifest(entry) for entry in data["workloads"]]


def build(
    out: Path = DEFAULT_OUT,
    only: list[str] | None = None,
    force: bool = False,
    jobs: int | None = None,
) -> list[Path]:
    """Build the selected workloads (all by default); returns the output paths."""
    targets = load_targets()
    if only:
        unknown = sorted(set(only) - {t.name for t in targets})
        if unknown:
            raise BuildError(f"unknown workloads: {', '.join(unknown)}")
        targets = [t for t in targets if t.name in only]
    out.mkdir(parents=True, exist_ok=True)
    zig = zig_version() if any(t.sources for t in targets) else "none"
    # The slowest target (SQLite) first, so it overlaps with the many small ones.
    targets.sort(key=lambda t: t.third_party is None)
    workers = jobs or os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(build_one, t, out, zig, force) for t in targets]
        for future in concurrent.futures.as_completed(futures):
            name, rebuilt, seconds = future.result()
            if rebuilt:
                log.info("built %s in %.1f s", name, seconds)
            else:
                log.debug("%s is up to date", name)
    return [out / f"{t.name}.wasm" for t in targets]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="workloads to build (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument("--jobs", type=int, default=None, help="parallel compiles")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="functions: %(message)s",
        stream=sys.stderr,
    )
    started = time.perf_counter()
    try:
        outputs = build(args.out, args.names or None, args.force, args.jobs)
    except BuildError as exc:
        log.error("%s", exc)
        return 1
    log.info(
        "%d workloads ready in %s (%.1f s)", len(outputs), args.out, time.perf_counter() - started
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
