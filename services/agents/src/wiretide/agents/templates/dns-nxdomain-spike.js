// DNS NXDOMAIN spike: counts NXDOMAIN answers every 10 seconds and reports a window with more than
// env.NXDOMAIN_THRESHOLD (default 20) of them, naming the names asked most.
var threshold = Number(env.NXDOMAIN_THRESHOLD || 20);
var count = 0;
var names = {};

function onItemCaptured(entry) {
  if (!kfl.match("dns", entry)) return;
  var rcode = entry.response && entry.response.rcode_name;
  if (rcode !== "NXDOMAIN") return;
  count++;
  names[entry.path] = (names[entry.path] || 0) + 1;
}

jobs.schedule("nxdomain-window", "*/10 * * * * *", function () {
  prometheus.metric("dns_nxdomain_window", "NXDOMAIN answers in the last 10 s window", "gauge", count);
  if (count > threshold) {
    var top = Object.keys(names).sort(function (a, b) { return names[b] - names[a]; }).slice(0, 5);
    console.error("NXDOMAIN spike:", count, "in 10 s; most asked:", top.join(", "));
    if (env.WEBHOOK_URL) vendor.webhook("POST", env.WEBHOOK_URL, { nxdomain: count, names: top });
  }
  count = 0;
  names = {};
});
