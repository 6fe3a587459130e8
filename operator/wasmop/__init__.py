"""wasmop: a Kubernetes operator for WebAssembly functions, and its benchmark harness."""

__version__ = "0.1.0"
