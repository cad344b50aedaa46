// Latency SLO burn: the share of HTTP/gRPC calls slower than env.SLO_MS (default 300 ms) against an
// objective of env.SLO_TARGET (default 0.99), every minute. Burn rate 1 spends the error budget
// exactly over the SLO window; above env.BURN_ALERT (default 14.4, Google SRE's fast burn) it alerts.
var sloUs = Number(env.SLO_MS || 300) * 1000;
var target = Number(env.SLO_TARGET || 0.99);
var alertAt = Number(env.BURN_ALERT || 14.4);
var total = 0;
var slow = 0;

function onItemCaptured(entry) {
  if (entry.protocol !== "http" && entry.protocol !== "http2" && entry.protocol !== "grpc") return;
  total++;
  if (entry.elapsed_us > sloUs) slow++;
}

function report() {
  if (total === 0) return;
  var burn = slow / total / (1 - target);
  prometheus.metric("latency_slo_burn_rate", "Latency SLO burn rate over the last minute", "gauge", burn);
  prometheus.metric("latency_slo_slow_calls", "Calls slower than the SLO", "counter", slow);
  if (burn >= alertAt) {
    console.error("latency SLO burning at", burn.toFixed(1) + "x:", slow, "of", total, "calls over", sloUs / 1000, "ms");
    if (env.WEBHOOK_URL) vendor.webhook("POST", env.WEBHOOK_URL, { burn: burn, slow: slow, total: total });
  } else {
    console.log("latency SLO burn", burn.toFixed(2) + "x", "(" + slow + "/" + total + " slow)");
  }
  total = 0;
  slow = 0;
}

jobs.schedule("slo-burn", "0 * * * * *", report);
