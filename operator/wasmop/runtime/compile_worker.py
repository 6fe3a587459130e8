"""A compile worker process: ``python -m wasmop.runtime.compile_worker FD``.

Started by :class:`wasmop.runtime.compiler.CompilePool`; serves compile jobs on the socket
``FD`` until it closes. A module of its own, so the package's import of the compiler does
not run this file a second time.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection

from wasmop.runtime.compiler import serve_compile_jobs

if __name__ == "__main__":
    serve_compile_jobs(Connection(int(sys.argv[1])))
