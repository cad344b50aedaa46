"""The Kubernetes API emulator for tests: the same one `wiretide demo` serves (wiretide.cli.demo.kubeapi)."""

from wiretide.cli.demo.kubeapi import (
    KubeApi,
    endpointslice,
    namespace,
    node,
    pod,
    replicaset,
    service,
    to_json,
)

__all__ = ["KubeApi", "endpointslice", "namespace", "node", "pod", "replicaset", "service", "to_json"]
