"""The embedded Kubernetes cluster: PKI, configuration, supervision of its processes."""
