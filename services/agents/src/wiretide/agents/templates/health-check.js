// Pass/fail per health check: every call to a health endpoint (env.HEALTH_PATHS, default
// /health,/healthz,/ready,/readyz,/live,/livez) passes when it answers 2xx within env.HEALTH_MS
// (default 1000 ms) and fails otherwise; the marks show in the UI and fail `wiretide agents test`.
var paths = (env.HEALTH_PATHS || "/health,/healthz,/ready,/readyz,/live,/livez").split(",");
var maxUs = Number(env.HEALTH_MS || 1000) * 1000;
var failing = {};

function isHealth(entry) {
  if (entry.protocol !== "http" && entry.protocol !== "http2") return false;
  var path = (entry.path || "").split("?")[0];
  return paths.indexOf(path) >= 0;
}

function verdict(entry) {
  if (!(entry.status >= 200 && entry.status < 300)) return "status " + entry.status;
  if (entry.elapsed_us > maxUs) return "slow: " + Math.round(entry.elapsed_us / 1000) + " ms";
  return null;
}

function check(entry) {
  if (!isHealth(entry)) return;
  var why = verdict(entry);
  var target = entry.dst.name || entry.dst.ip;
  if (why === null) {
    test.pass(entry);
    if (failing[target]) { console.log("healthy again:", target, entry.path); delete failing[target]; }
  } else {
    test.fail(entry, why);
    if (!failing[target]) console.error("health check failing:", target, entry.path, why);
    failing[target] = true;
  }
}

function onItemCaptured(entry) { check(entry); }
function onItemQueried(entry) {
  if (!isHealth(entry)) return;
  var why = verdict(entry);
  if (why === null) test.pass(entry); else test.fail(entry, why);
}
