"""`vendor.webhook(method, url, body, headers)` and `vendor.slack(...)`: outbound HTTP, sent off the hook
path by the backend's outbound worker (bounded queue, timeout, counted drops)."""

from __future__ import annotations

from typing import Final

from wiretide.agents.helpers import Call, Helper, Host

JS: Final = """
function __wt_webhook(sig, method, url, body, headers) {
  __wt_check(sig, "method", method, ["string"]);
  __wt_check(sig, "url", url, ["string"]);
  if (!/^https?:\\/\\/[^\\s]+$/.test(url)) {
    throw new TypeError(sig + ": url must be an http:// or https:// URL");
  }
  if (body === undefined || body === null) body = "";
  else if (typeof body !== "string") body = JSON.stringify(body);
  if (headers === undefined || headers === null) headers = {};
  __wt_check(sig, "headers", headers, ["object"]);
  var h = {};
  for (var k in headers) h[k] = String(headers[k]);
  __wt_emit(["vendor.webhook", method.toUpperCase(), url, body, h]);
}
var vendor = {
  webhook: function (method, url, body, headers) {
    __wt_webhook("vendor.webhook(method, url, body, headers)", method, url, body, headers);
  },
  slack: function (webhookUrl, channel, pretext, text, color) {
    var sig = "vendor.slack(webhookUrl, channel, pretext, text, color)";
    __wt_check(sig, "channel", channel, ["string", "undefined", "null"]);
    __wt_check(sig, "pretext", pretext, ["string", "undefined", "null"]);
    __wt_check(sig, "text", text, ["string"]);
    var msg = { text: pretext || text, attachments: [{ text: text, color: color || "#d00000" }] };
    if (channel) msg.channel = channel;
    __wt_webhook(sig, "POST", webhookUrl, JSON.stringify(msg), { "content-type": "application/json" });
  },
};
"""


def _webhook(call: Call, host: Host) -> None:
    method, url, body, headers = call.args
    backend = host.backend
    host.submit(
        f"webhook {method} {url}",
        lambda: backend.webhook(
            str(method), str(url), str(body), {str(k): str(v) for k, v in headers.items()}
        ),
    )


HELPER: Final = Helper(
    namespace="vendor",
    js=JS,
    doc="""`vendor.webhook(method, url, body, headers?)`: send an HTTP request (`body` a string, or any value
sent as JSON). `vendor.slack(webhookUrl, channel, pretext, text, color?)`: post a message to a Slack
incoming webhook. Both return at once: requests leave from a worker off the hook path, with a timeout
(`WIRETIDE_AGENTS_OUTBOUND_TIMEOUT_S`) and a bounded queue (`WIRETIDE_AGENTS_OUTBOUND_QUEUE`); what does
not fit is dropped and counted (`wiretide_agents_outbound_dropped_total`, the agent's
`outbound_dropped`), failures go to the agent's log.""",
    handlers={"vendor.webhook": _webhook},
)
