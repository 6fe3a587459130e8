"""Wasm node agents: virtual kubelets that run WebAssembly Pods with wasmop.runtime."""
