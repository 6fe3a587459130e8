"""Errors raised while loading or checking a module.

Every error carries a machine-readable `reason` (a stable CamelCase word the operator can
put into a `WasmFunction` condition) and a human message that names the offending part
(an import, a feature, a size). They are all `ModuleError`s, so a caller that only wants
"is this module servable" catches one type.
"""

from __future__ import annotations

from typing import Any, ClassVar


class RuntimeConfigError(ValueError):
    """A runtime or function configuration that cannot work (checked before wasmtime sees it)."""


class ModuleError(Exception):
    """A module that cannot be served by this runtime."""

    reason: ClassVar[str] = "InvalidModule"

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        """The error as the operator stores it: reason, message and any details."""
        return {"reason": self.reason, "message": self.message, **self.detail}


class NotWasm(ModuleError):
    """The bytes are not a WebAssembly binary module (wrong magic or version)."""

    reason = "NotWasm"


class ModuleTooLarge(ModuleError):
    """The module (after decompression) is larger than the runtime accepts."""

    reason = "ModuleTooLarge"


class FetchError(ModuleError):
    """The module could not be read from its file or URL."""

    reason = "FetchError"


class CompileError(ModuleError):
    """wasmtime refused the module: invalid code, or a construct the engine cannot compile."""

    reason = "CompileError"


class CompileTimeout(CompileError):
    """Compiling the module took longer than the runtime's compile deadline."""

    reason = "CompileTimeout"


class UnsupportedFeature(CompileError):
    """The module uses a WebAssembly proposal the runtime's engine has disabled."""

    reason = "UnsupportedFeature"


class ForbiddenImport(ModuleError):
    """The module imports something the runtime does not provide."""

    reason = "ForbiddenImport"


class MissingEntrypoint(ModuleError):
    """The module is not a WASI command: no `_start` function or no exported memory."""

    reason = "MissingEntrypoint"


class MemoryLimitExceeded(ModuleError):
    """A memory's initial size is already larger than its share of the per-request cap."""

    reason = "MemoryLimit"


class TableLimitExceeded(ModuleError):
    """A table's initial size is already larger than its share of the table-element cap."""

    reason = "TableLimit"
