// Redact sensitive data: finds what should not travel in clear — credentials in headers, card numbers,
// e-mail addresses, bearer tokens in URLs — counts each kind, and logs the entry with the value masked.
// Agents see entries and cannot rewrite what is stored; this one tells you what the store's redaction
// must cover. With env.FAIL_ON_FINDING=1 every entry with a finding fails its test (CI on captures).
var CARD = /\b(?:\d[ -]?){13,16}\b/;
var EMAIL = /[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}/;
var TOKEN_IN_URL = /[?&](?:access_token|token|api_key|apikey|password)=([^&]+)/i;
var HEADERS = ["authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"];

function mask(value) {
  var s = String(value);
  return s.length <= 4 ? "****" : s.slice(0, 2) + "****" + s.slice(-2);
}

function findings(entry) {
  var found = [];
  var sides = [entry.request, entry.response];
  for (var i = 0; i < sides.length; i++) {
    var side = sides[i];
    if (!side) continue;
    var headers = side.headers || {};
    for (var j = 0; j < HEADERS.length; j++) {
      if (headers[HEADERS[j]] !== undefined) found.push([HEADERS[j], mask(headers[HEADERS[j]])]);
    }
    var body = typeof side.body === "string" ? side.body : "";
    var card = CARD.exec(body);
    if (card) found.push(["card-number", mask(card[0])]);
    var mail = EMAIL.exec(body);
    if (mail) found.push(["email", mask(mail[0])]);
  }
  var token = TOKEN_IN_URL.exec(entry.path || "");
  if (token) found.push(["token-in-url", mask(token[1])]);
  return found;
}

function onItemCaptured(entry) {
  var found = findings(entry);
  for (var i = 0; i < found.length; i++) {
    prometheus.vector("sensitive_findings", "Sensitive values seen in clear, by kind", "counter", ["kind"], [found[i][0]], 1);
    console.log("sensitive", found[i][0], found[i][1], "in", entry.id, entry.summary);
  }
}

function onItemQueried(entry) {
  if (env.FAIL_ON_FINDING !== "1") return;
  var found = findings(entry);
  if (found.length) test.fail(entry, "carries " + found.map(function (f) { return f[0]; }).join(", "));
  else test.pass(entry);
}
