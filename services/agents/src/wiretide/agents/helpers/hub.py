"""`hub.action(action, obj)`: a message to every replica's copy of this agent (`onHubAction`)."""

from __future__ import annotations

from typing import Final

from wiretide.agents.helpers import Call, Helper, Host

JS: Final = """
var hub = {
  action: function (action, obj) {
    var sig = "hub.action(action, obj)";
    __wt_check(sig, "action", action, ["string"]);
    __wt_emit(["hub.action", action, obj === undefined ? null : obj]);
  },
};
"""


def _action(call: Call, host: Host) -> None:
    action, obj = call.args
    host.backend.hub(host, str(action), obj)


HELPER: Final = Helper(
    namespace="hub",
    js=JS,
    doc="""`hub.action(action, obj)`: send `obj` (any JSON value) under the name `action` to every replica's
copy of this agent, this one included, which receive it in `onHubAction(action, obj)`. Replicas
each see part of the traffic; this is how they add it up. Sent over NATS after the call returns.""",
    handlers={"hub.action": _action},
)
