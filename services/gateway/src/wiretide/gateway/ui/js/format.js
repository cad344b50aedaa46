// Presentation of entries: names, statuses, sizes, times. Pure functions, no DOM.
export function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
export function endName(end) {
  if (!end) return "?";
  const name = end.name || end.pod?.name || end.ip || "?";
  return name + (end.name ? "" : end.port ? `:${end.port}` : "");
}
export function endNs(end) { return end?.namespace || end?.pod?.namespace || ""; }

// The protocol table (GET /api/protocols, wiretide.common.protocols): how each protocol's status reads
// and which codes are errors. The UI keeps no rules of its own; until the table loads (or if it cannot)
// every protocol reads as the table's generic row: its status number, or its error type.
const GENERIC = { protocols: {}, default: { family: "transport", title: "", status: [
  { path: ["status"], client_errors: { codes: [], ranges: [] }, server_errors: { codes: [], ranges: [] },
    names: {}, text: "{code}", error_type: "{code}", classes: false },
] } };
let table = GENERIC;
export async function loadProtocols(getJSON) {
  try { table = await getJSON("/api/protocols"); } catch { table = GENERIC; }
  return table;
}
function row(e) { return table.protocols[e.protocol] || table.default; }
function inCodes(set, code) {
  return set.codes.includes(code) || set.ranges.some(([lo, hi]) => (lo === null || code >= lo) && (hi === null || code <= hi));
}
// The first status rule whose path holds an integer, and that integer.
function reading(e) {
  for (const rule of row(e).status) {
    let v = e;
    for (const key of rule.path) v = v && typeof v === "object" ? v[key] : undefined;
    if (Number.isInteger(v)) return [rule, v];
  }
  return null;
}
function errorType(e) { return e.error ? (e.error.type || "error") : ""; }
function fill(template, rule, code) { return template.replace("{code}", code).replace("{name}", rule.names[String(code)] ?? code); }
function judge(e, server) {
  const r = reading(e);
  if (r && inCodes(server ? r[0].server_errors : r[0].client_errors, r[1])) return fill(r[0].error_type, r[0], r[1]);
  return errorType(e);
}
export function clientError(e) { return judge(e, false); }
export function serverError(e) { return judge(e, true); }
export function isError(e) { return serverError(e) !== ""; }
export function family(e) { return row(e).family; }
export function statusText(e) {
  const r = reading(e);
  if (!r) return errorType(e);
  const [rule, code] = r;
  return rule.names[String(code)] === undefined ? String(code) : fill(rule.text, rule, code);
}
// CSS class of the status: serr (the capture saw the call fail), s5 (the server's fault), s4 (the
// caller's), s1-s3 (an HTTP class), s2 (any other answer), "" (no status).
export function statusClass(e) {
  if (e.error) return "serr";
  const r = reading(e);
  if (!r) return "";
  if (serverError(e)) return "s5";
  if (clientError(e)) return "s4";
  const [rule, code] = r;
  return rule.classes && code >= 100 && code < 600 ? `s${Math.floor(code / 100)}` : "s2";
}
export function latency(us) {
  if (typeof us !== "number") return "";
  if (us < 1000) return `${us} µs`;
  if (us < 1e6) return `${(us / 1000).toFixed(us < 1e4 ? 1 : 0)} ms`;
  return `${(us / 1e6).toFixed(2)} s`;
}
export function bytes(n) {
  if (typeof n !== "number") return "";
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / (1 << 20)).toFixed(1)} MB`;
}
export function clock(ns) {
  const d = new Date(Math.floor(ns / 1e6));
  return d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");
}
export function kflString(v) { return JSON.stringify(String(v)); }
