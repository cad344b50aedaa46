// Per-minute status histogram to Prometheus: HTTP calls per status class (2xx, 3xx, 4xx, 5xx) and per
// destination service, published as gauges every minute (and logged), counters for the running total.
var minute = {};

function onItemCaptured(entry) {
  if (entry.protocol !== "http" && entry.protocol !== "http2") return;
  var status = entry.status || 0;
  var klass = status ? Math.floor(status / 100) + "xx" : "none";
  var service = entry.dst.service ? entry.dst.service.name : (entry.dst.name || "external");
  var key = klass + " " + service;
  minute[key] = (minute[key] || 0) + 1;
  prometheus.vector("http_calls", "HTTP calls by status class and service", "counter",
    ["status_class", "service"], [klass, service], 1);
}

jobs.schedule("status-histogram", "0 * * * * *", function () {
  var keys = Object.keys(minute).sort();
  for (var i = 0; i < keys.length; i++) {
    var parts = keys[i].split(" ");
    prometheus.vector("http_calls_last_minute", "HTTP calls in the last minute by status class and service",
      "gauge", ["status_class", "service"], [parts[0], parts[1]], minute[keys[i]]);
  }
  if (keys.length) console.log("last minute:", keys.map(function (k) { return k + "=" + minute[k]; }).join(" "));
  minute = {};
});
