// The entry detail pane: request and response side by side, identities, timing, TLS, and the ways out
// (download PCAP, copy as curl / HAR, open the trace). Values are clickable to refine the filter.
import { esc, endName, endNs, latency, bytes, kflString, statusText, statusClass } from "./format.js";
import { getJSON, pcapURL } from "./api.js";
import { marks } from "./agents.js";

const HEX_LIMIT = 4096; // bytes of a binary body shown as hex

function kvTable(obj, kflPrefix) {
  if (!obj || typeof obj !== "object" || !Object.keys(obj).length) return `<div class="muted">—</div>`;
  const rows = Object.entries(obj).map(([k, v]) => {
    const val = Array.isArray(v) ? v.join(", ") : typeof v === "object" && v !== null ? JSON.stringify(v) : String(v);
    const kfl = kflPrefix ? `${kflPrefix}[${kflString(k)}] == ${kflString(val)}` : "";
    return `<tr><td>${esc(k)}</td><td${kfl ? ` class="clickable" data-kfl="${esc(kfl)}"` : ""}>${esc(val)}</td></tr>`;
  });
  return `<table class="kv">${rows.join("")}</table>`;
}

function hexdump(b64) {
  let raw;
  try { raw = atob(b64); } catch { return esc(b64); }
  const lines = [];
  for (let off = 0; off < Math.min(raw.length, HEX_LIMIT); off += 16) {
    const chunk = raw.slice(off, off + 16);
    const hex = [...chunk].map((c) => c.charCodeAt(0).toString(16).padStart(2, "0")).join(" ");
    const asc = [...chunk].map((c) => (c.charCodeAt(0) >= 32 && c.charCodeAt(0) < 127 ? c : ".")).join("");
    lines.push(`${off.toString(16).padStart(6, "0")}  ${hex.padEnd(48)}  ${asc}`);
  }
  if (raw.length > HEX_LIMIT) lines.push(`… ${raw.length - HEX_LIMIT} more bytes`);
  return esc(lines.join("\n"));
}

function gqlHighlight(q) {
  return esc(q).replace(/\b(query|mutation|subscription|fragment|on)\b/g, '<b class="s3">$1</b>');
}

function body(b) {
  if (!b || (b.content === undefined && !b.size)) return `<div class="muted">no body</div>`;
  let shown;
  if (b.encoding === "base64") shown = hexdump(b.content || "");
  else if (b.encoding === "json" || /json/.test(b.mime || "")) {
    try { shown = esc(JSON.stringify(typeof b.content === "string" ? JSON.parse(b.content) : b.content, null, 2)); }
    catch { shown = esc(b.content); }
  } else shown = esc(typeof b.content === "string" ? b.content : JSON.stringify(b.content, null, 2));
  const note = `${esc(b.mime || "")} ${bytes(b.size)}${b.truncated ? ' · <span class="s4">truncated at capture</span>' : ""}`;
  return `<div class="muted">${note}</div><pre class="body">${shown}</pre>`;
}

// Diameter AVPs as an indented tree: `Name (code) = value (text)`, grouped AVPs nested below.
function avpTree(avps, depth = 0) {
  return avps.map((a) => {
    const head = `${"  ".repeat(depth)}${a.name || "AVP"} (${a.code}${a.vendor ? `, vendor ${a.vendor}` : ""})`;
    const value = "value" in a ? ` = ${typeof a.value === "string" ? a.value : JSON.stringify(a.value)}${a.text ? ` (${a.text})` : ""}` : a.size != null ? ` [${a.size} bytes not kept]` : "";
    return [head + value, ...(a.avps ? [avpTree(a.avps, depth + 1)] : [])].join("\n");
  }).join("\n");
}

function side(title, obj, kflSide) {
  if (!obj) return `<div><h4>${title}</h4><div class="muted">—</div></div>`;
  const parts = [`<h4>${title}</h4>`];
  const scalars = {};
  for (const [k, v] of Object.entries(obj)) {
    if (["headers", "cookies", "query", "body", "questions", "answers", "authorities", "additionals"].includes(k)) continue;
    if (v !== null && typeof v === "object") continue; // messages, AVPs, events … below
    scalars[k] = v;
  }
  parts.push(kvTable(scalars));
  if (obj.headers) parts.push(`<h4>Headers</h4>${kvTable(obj.headers, `${kflSide}.headers`)}`);
  if (obj.cookies && Object.keys(obj.cookies).length) parts.push(`<h4>Cookies</h4>${kvTable(obj.cookies)}`);
  if (obj.query && Object.keys(obj.query).length) parts.push(`<h4>Query</h4>${kvTable(obj.query)}`);
  if (obj.questions) parts.push(`<h4>Questions</h4>${kvTable(Object.fromEntries(obj.questions.map((q, i) => [i, `${q.name} ${q.type}`])))}`);
  if (obj.answers) parts.push(`<h4>Answers</h4>${kvTable(Object.fromEntries(obj.answers.map((a, i) => [i, `${a.name} ${a.type} ${a.data} ttl=${a.ttl}`])))}`);
  if (obj.query_text || obj.graphql_query) parts.push(`<h4>GraphQL</h4><pre class="body">${gqlHighlight(obj.query_text || obj.graphql_query)}</pre>`);
  if (Array.isArray(obj.messages)) parts.push(`<h4>Messages (${obj.messages.length})</h4><pre class="body">${esc(JSON.stringify(obj.messages, null, 2))}</pre>`);
  if (Array.isArray(obj.avps)) parts.push(`<h4>AVPs (${obj.avp_count ?? obj.avps.length})</h4><pre class="body">${esc(avpTree(obj.avps))}</pre>`);
  if (Array.isArray(obj.events)) parts.push(`<h4>Events</h4>${kvTable(Object.fromEntries(obj.events.map((ev, i) => [i, `+${ev.at_us} µs ${ev.from} ${ev.chunk}${ev.causes?.length ? ": " + ev.causes.join(", ") : ""}${ev.tag ? " tag " + ev.tag : ""}`])))}`);
  for (const k of ["chunks", "ppids", "m3ua", "malformed", "abort"]) if (obj[k] && typeof obj[k] === "object") parts.push(`<h4>${esc(k)}</h4>${kvTable(obj[k])}`);
  if ("body" in obj) parts.push(`<h4>Body</h4>${body(obj.body)}`);
  return `<div>${parts.join("")}</div>`;
}

function identity(label, end, kflSide) {
  if (!end) return "";
  const flat = {
    ip: end.ip, port: end.port, name: end.name, namespace: endNs(end), pod: end.pod?.name, service: end.service?.name,
    workload: end.workload ? `${end.workload.kind}/${end.workload.name}` : undefined, node: end.node,
    process: end.process ? `${end.process.name || ""} (pid ${end.process.pid ?? "?"})` : undefined,
    container: end.process?.container_id, resolution: end.resolution,
  };
  const rows = Object.entries(flat).filter(([, v]) => v !== undefined && v !== null && v !== "").map(([k, v]) => {
    const field = { ip: "ip", port: "port", name: "name", namespace: "namespace", pod: "pod.name", service: "service.name" }[k];
    const kfl = field ? `${kflSide}.${field} == ${typeof v === "number" ? v : kflString(v)}` : "";
    return `<tr><td>${k}</td><td${kfl ? ` class="clickable" data-kfl="${esc(kfl)}"` : ""}>${esc(v)}</td></tr>`;
  });
  const labels = end.pod?.labels ? `<h4>Labels</h4>${kvTable(end.pod.labels)}` : "";
  return `<div><h4>${label}: ${esc(endName(end))}</h4><table class="kv">${rows.join("")}</table>${labels}</div>`;
}

export function curlFor(e) {
  const r = e.request || {};
  const h = r.headers || {};
  const host = h.host || h[":authority"] || `${e.dst?.ip || ""}:${e.dst?.port || ""}`;
  const scheme = e.tls ? "https" : "http";
  const url = (r.url || "").includes("://") ? r.url : `${scheme}://${host}${r.url || e.path || "/"}`;
  const q = (s) => `'${String(s).replace(/'/g, "'\\''")}'`;
  const parts = ["curl", "-X", e.method || r.method || "GET", q(url)];
  for (const [k, v] of Object.entries(h)) if (!k.startsWith(":") && k !== "content-length") parts.push("-H", q(`${k}: ${v}`));
  if (r.body && typeof r.body.content === "string" && r.body.encoding !== "base64") parts.push("--data-binary", q(r.body.content));
  return parts.join(" ");
}

// Each showDetail or closeDetail call takes a new number; a detail still loading when a newer one
// was asked for, or when the pane was closed, is dropped instead of (re)opening the pane late.
let showing = 0;

export function closeDetail(pane) {
  showing += 1;
  pane.hidden = true;
}

export async function showDetail(pane, entry, { onFilter, onTrace, toast }) {
  const mine = ++showing;
  let e = entry;
  try { e = await getJSON(`/api/entries/${encodeURIComponent(entry.id)}`); } catch { /* live copy is enough */ }
  if (mine !== showing) return;
  let trace = e.trace?.trace_id;
  if (!trace) {
    // The tracer knows which trace an entry's spans joined; ask it (absent tracer: no link).
    try {
      const found = await getJSON("/api/traces", { q: `id == ${kflString(e.id)}`, limit: 1 });
      if (found.traces?.length) {
        const t = found.traces[0];
        trace = t.trace_id;
        e = { ...e, trace: { trace_id: t.trace_id, link: `${t.span_count} spans`, confidence: t.min_confidence } };
      }
    } catch { /* no tracer reachable */ }
  }
  if (mine !== showing) return;
  pane.hidden = false;
  pane.innerHTML = `
    <div class="actions">
      <button data-act="close" title="Close (Esc)">✕</button>
      <a href="${pcapURL(e.id)}" download><button>Download PCAP</button></a>
      ${e.protocol && ["http", "http2", "grpc", "graphql"].includes(e.protocol) ? '<button data-act="curl">Copy as curl</button><button data-act="har">Copy as HAR</button>' : ""}
      ${trace ? `<button data-act="trace">Open trace</button>` : ""}
    </div>
    <h2><span class="badge ${esc(e.protocol)}">${esc(e.protocol)}</span> ${esc(e.method || "")} ${esc(e.path || e.summary || "")}
      <span class="${statusClass(e)}">${esc(statusText(e))}</span></h2>
    <table class="kv">
      <tr><td>time</td><td>${new Date(Math.floor(e.timestamp / 1e6)).toISOString()}</td></tr>
      <tr><td>latency</td><td>${latency(e.elapsed_us)}</td></tr>
      <tr><td>sizes</td><td>request ${bytes(e.size?.request)} · response ${bytes(e.size?.response)}</td></tr>
      <tr><td>transport</td><td>${esc(e.transport || "")} ${esc(e.version || "")} · flow ${esc(e.flow_id || "")} ${e.stream != null ? "· stream " + esc(e.stream) : ""}</td></tr>
      <tr><td>capture</td><td>${esc(e.capture?.source || "")} ${esc(e.capture?.interface || "")} · node ${esc(e.node || "")}</td></tr>
      ${e.error ? `<tr><td>error</td><td class="serr">${esc(e.error.type)}: ${esc(e.error.message)}</td></tr>` : ""}
      ${e.redacted?.length ? `<tr><td>redacted</td><td class="s4 clickable" data-kfl="size(redacted) > 0" title="replaced by [REDACTED] in the dissector, before anything was stored (docs/security.md)">🔒 ${esc(e.redacted.join(", "))}</td></tr>` : ""}
      ${e.icmp_errors?.length ? `<tr><td>icmp errors</td><td class="serr">${e.icmp_errors.map((n) => `<span class="clickable" data-kfl="${esc(`id == ${kflString(n.id)}`)}" title="ICMP ${esc(n.type)} (code ${esc(n.code)}) quoting this flow: show that entry">${esc(n.reason)} from ${esc(n.from)}</span>`).join(", ")}</td></tr>` : ""}
      ${trace ? `<tr><td>trace</td><td>${esc(trace)} (${esc(e.trace.link || "")}, lowest confidence ${esc(e.trace.confidence ?? "")})</td></tr>` : ""}
    </table>
    ${marks.get(e.id).length ? `<h4>Agents</h4><table class="kv marks">${marks.rows(e.id)}</table>` : ""}
    ${e.tls ? `<h4>TLS</h4>${kvTable(e.tls)}` : ""}
    <div class="sides">${identity("Source", e.src, "src")}${identity("Destination", e.dst, "dst")}</div>
    <div class="sides">${side("Request", e.request, "request")}${side("Response", e.response, "response")}</div>`;
  pane.onclick = async (ev) => {
    const v = ev.target.closest(".clickable");
    if (v && v.dataset.kfl) { onFilter(v.dataset.kfl); return; }
    const act = ev.target.closest("button")?.dataset.act;
    if (act === "close") closeDetail(pane);
    if (act === "curl") { await navigator.clipboard?.writeText(curlFor(e)).catch(() => {}); toast("curl command copied"); }
    if (act === "har") {
      const har = await getJSON("/api/export.har", { q: `id == ${kflString(e.id)}` });
      await navigator.clipboard?.writeText(JSON.stringify(har, null, 2)).catch(() => {});
      toast("HAR copied");
    }
    if (act === "trace") onTrace(trace);
  };
}
