"""`utils.nodeName()` and `env`: where the agent runs and the settings it was given."""

from __future__ import annotations

from typing import Final

from wiretide.agents.helpers import Helper

JS: Final = """
var utils = {
  nodeName: function () { return __wt_node; },
};
"""

HELPER: Final = Helper(
    namespace="utils",
    js=JS,
    doc="""`utils.nodeName()`: the node (host) this copy of the agent runs on. `env`: the agent's settings,
an object of strings given at `put` (`wiretide agents put FILE --env KEY=VALUE`, or `"env"` in the
REST body), e.g. `env.WEBHOOK_URL`.""",
)
