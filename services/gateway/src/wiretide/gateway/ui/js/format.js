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
export function statusClass(e) {
  if (e.error) return "serr";
  const s = e.status;
  if (typeof s !== "number") return "";
  if (e.protocol === "dns") return s === 0 ? "s2" : "s5";
  if (e.protocol === "grpc") return s === 0 || s === 200 ? "s2" : "s5";
  return `s${Math.floor(s / 100)}`;
}
export function statusText(e) {
  if (e.protocol === "grpc" && e.response && e.response.grpc_status !== undefined) return String(e.response.grpc_status);
  if (e.protocol === "dns" && e.response?.rcode_name) return e.response.rcode_name;
  return e.status ?? (e.error ? e.error.type : "");
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
