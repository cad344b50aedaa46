// 5xx alert to a webhook: every HTTP/gRPC server error is posted to env.WEBHOOK_URL (JSON), at most
// env.MAX_PER_MINUTE (default 60) a minute; without a URL the errors are only logged.
const SERVER_ERROR = "(http && status_code >= 500) || (grpc && grpc_status != 0)";
var sent = 0;
var suppressed = 0;
var limit = Number(env.MAX_PER_MINUTE || 60);

function onItemCaptured(entry) {
  if (!kfl.match(SERVER_ERROR, entry)) return;
  var who = (entry.src.name || entry.src.ip) + " -> " + (entry.dst.name || entry.dst.ip);
  console.log("server error", entry.status, entry.method, entry.path, who);
  if (!env.WEBHOOK_URL) return;
  if (sent >= limit) { suppressed++; return; }
  sent++;
  vendor.webhook("POST", env.WEBHOOK_URL, {
    text: "Wiretide: " + entry.summary + " (" + who + ")",
    entry: entry.id, status: entry.status, path: entry.path, node: utils.nodeName(),
  }, { "content-type": "application/json" });
}

jobs.schedule("reset-5xx-budget", "0 * * * * *", function () {
  if (suppressed > 0) console.error(suppressed, "server errors not posted in the last minute (limit", limit + ")");
  sent = 0;
  suppressed = 0;
});
