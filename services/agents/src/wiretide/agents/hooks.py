"""The hooks an agent may define: one typed dataclass each, named as Kubeshark names them so that
existing scripts port (`ItemCaptured` is the hook `onItemCaptured`).

Rule: a hook's class is its documentation — its docstring and its fields' comments are the scripting
reference (`docs/agents.md` is generated from them by `wiretide.agents.docs`), and its fields are
the JavaScript arguments in order. The runtime calls a hook once per item, many items per call into
the sandbox (never one call per packet).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Final


@dataclass(frozen=True, slots=True)
class ItemCaptured:
    """Called for every entry (one API call) as it is captured, before it is queried by anyone.

    `entry` is the canonical Entry JSON (docs/protocols.md): `protocol`, `method`, `path`, `status`,
    `elapsed_us`, `src`/`dst` with their Kubernetes names, `request`/`response`, `trace`... Replicas
    of the agents service share the entries through one durable JetStream consumer, so each entry
    reaches one replica's copy of the agent. Return values are ignored. While no enabled agent defines
    `onItemCaptured`, the service only counts and acknowledges the entries without decoding them
    (`.venv/bin/python bench/consumers.py` prints the cost per entry both ways); entries that arrive
    after such an agent is deployed reach it, earlier ones do not.

        function onItemCaptured(entry) {
          if (entry.status >= 500) console.log(entry.method, entry.path, entry.status);
        }
    """

    entry: dict[str, Any]  # the Entry, as JSON


@dataclass(frozen=True, slots=True)
class ItemQueried:
    """Called for each entry a user looks at (the UI's table and detail, `/api/agents/annotations`).

    Mark the entry with `test.pass(entry, note)` or `test.fail(entry, note)`: the UI shows the mark in
    the entries table and the detail pane, naming the agent. Keep it cheap: it runs while the user waits.

        function onItemQueried(entry) {
          if (entry.path !== "/healthz") return;
          entry.status === 200 ? test.pass(entry) : test.fail(entry, "unhealthy");
        }
    """

    entry: dict[str, Any]  # the Entry, as JSON


@dataclass(frozen=True, slots=True)
class PacketCaptured:
    """Called once per capture-statistics interval (about a second) with the packet counts since the
    previous call, per node: never once per packet.

    `stats` is `{node, packets, bytes, drops: {reason: n}, interfaces: [{name, packets, bytes,
    kernel_drops}]}`, every number a delta over the interval.

        function onPacketCaptured(stats) {
          if (stats.drops.kernel > 0) console.error("kernel dropped", stats.drops.kernel, "on", stats.node);
        }
    """

    stats: dict[str, Any]  # packet counts since the previous call


@dataclass(frozen=True, slots=True)
class PodEvent:
    """Called for each pod the resolver sees appear, change or go (its identity deltas).

    `event` is `{type: "upsert" | "removal", pod: {name, namespace, ip, node, labels, workload}}`; a
    deleted pod is a `removal` (the resolver keeps it, ended, for lookups at earlier times).

        function onPodEvent(event) {
          if (event.type === "removal") console.log("pod gone:", event.pod.namespace + "/" + event.pod.name);
        }
    """

    event: dict[str, Any]  # the pod and what happened to it


@dataclass(frozen=True, slots=True)
class HubAction:
    """Called with what any replica's copy of this agent sent with `hub.action(action, obj)`,
    including this replica's own: the way to aggregate across replicas that each see part of the traffic.

        function onHubAction(action, obj) {
          if (action === "count") totals[obj.replica] = obj.n;
        }
    """

    action: str  # the name given to hub.action
    obj: Any  # the object given to hub.action (JSON)


@dataclass(frozen=True, slots=True)
class Trace:
    """Called once for each trace the tracer completes: when its spans have left the assembly window
    and it stopped changing for `WIRETIDE_AGENTS_TRACE_SETTLE_S` (3 s), whatever its time — traces of a
    replayed capture too. Traces complete before any agent defined `onTrace` are not offered.

    `trace` is `{trace_id, root_name, root_service, start_ns, duration_us, span_count, error,
    min_confidence}`; `GET /api/traces/{trace_id}` has its spans.

        function onTrace(trace) {
          if (trace.duration_us > 1e6) console.log("slow trace", trace.trace_id, trace.root_name);
        }
    """

    trace: dict[str, Any]  # the trace's summary


HOOK_CLASSES: Final = (ItemCaptured, ItemQueried, PacketCaptured, PodEvent, HubAction, Trace)


def hook_name(cls: type) -> str:
    """`ItemCaptured` -> `onItemCaptured`."""
    return "on" + cls.__name__


HOOKS: Final = tuple(hook_name(c) for c in HOOK_CLASSES)
ON_ITEM_CAPTURED: Final = hook_name(ItemCaptured)
ON_ITEM_QUERIED: Final = hook_name(ItemQueried)
ON_PACKET_CAPTURED: Final = hook_name(PacketCaptured)
ON_POD_EVENT: Final = hook_name(PodEvent)
ON_HUB_ACTION: Final = hook_name(HubAction)
ON_TRACE: Final = hook_name(Trace)
# Hooks whose items are argument lists (spread into the call) rather than one argument.
SPREAD: Final = frozenset(hook_name(c) for c in HOOK_CLASSES if len(fields(c)) > 1)
