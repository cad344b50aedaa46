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

// Fields shown on their own below the scalars, by the code above (headers …) or by `nested` (the rest).
const OWN_SECTIONS = ["headers", "cookies", "query", "body", "messages", "questions", "answers", "authorities", "additionals"];
const TEXT_BLOCK = 96; // a string longer than this (or on several lines) is shown as a block of text
const JSON_LIMIT = 20000; // characters of a nested value shown as JSON

function jsonBlock(v) {
  let text = JSON.stringify(v, null, 2) ?? "";
  if (text.length > JSON_LIMIT) text = `${text.slice(0, JSON_LIMIT)}\n… ${text.length - JSON_LIMIT} more characters`;
  return `<pre class="body">${esc(text)}</pre>`;
}
const isScalar = (v) => v === null || typeof v !== "object";
const heading = (k) => esc(String(k).replace(/_/g, " "));

// A database or messaging error object (a MySQL ERR, a PostgreSQL ErrorResponse, a MongoDB failure):
// code, SQLSTATE and message first, in the error colour.
function errorBlock(err) {
  const first = ["code", "name", "sqlstate", "severity", "message"].filter((k) => err[k] !== undefined && err[k] !== null);
  const rest = Object.keys(err).filter((k) => !first.includes(k));
  const rows = [...first, ...rest].map((k) => `<tr><td>${esc(k)}</td><td class="serr">${esc(isScalar(err[k]) ? err[k] : JSON.stringify(err[k]))}</td></tr>`);
  return `<h4 class="serr">Error</h4><table class="kv error">${rows.join("")}</table>`;
}

// Records of a Kafka Produce request or Fetch response: one row per record under its topic-partition.
function recordsTable(topics) {
  const rows = [];
  for (const t of topics) {
    for (const p of Array.isArray(t?.partitions) ? t.partitions : []) {
      for (const r of Array.isArray(p?.records) ? p.records : []) {
        const show = (v) => (v && typeof v === "object" ? (v.base64 !== undefined ? `base64:${v.base64}` : JSON.stringify(v)) : v ?? "");
        const headers = Array.isArray(r.headers) ? r.headers.map((h) => `${h.key}=${show(h.value)}`).join(", ") : "";
        rows.push(`<tr><td>${esc(t.topic ?? t.topic_id ?? "")}[${esc(p.partition ?? "")}] @${esc(r.offset ?? "")}</td><td>${esc(show(r.key))}</td><td>${esc(show(r.value))}</td><td>${esc(headers)}</td></tr>`);
      }
    }
  }
  if (!rows.length) return "";
  return `<h4>Records (${rows.length})</h4><table class="kv records"><tr><td>topic[partition] @offset</td><td>key</td><td>value</td><td>headers</td></tr>${rows.join("")}</table>`;
}

// What a side holds beyond scalars, readably: the statement or command as text, errors highlighted,
// small objects as tables, lists of scalars joined, anything deeper as bounded JSON.
function nested(obj) {
  const parts = [];
  if (typeof obj.command === "string" && Array.isArray(obj.args)) {
    const word = (a) => (typeof a === "string" && a !== "" && !/[\s"']/.test(a) ? a : JSON.stringify(a));
    parts.push(`<h4>Command</h4><pre class="body command">${esc([obj.command, ...obj.args.map(word)].join(" "))}</pre>`);
  }
  for (const [k, v] of Object.entries(obj)) {
    if (OWN_SECTIONS.includes(k) || (k === "args" && parts.length)) continue;
    if (typeof v === "string" && (v.length > TEXT_BLOCK || v.includes("\n"))) {
      parts.push(`<h4>${heading(k)}</h4><pre class="body">${esc(v)}</pre>`);
    } else if (v === null || typeof v !== "object") {
      continue; // in the scalar table
    } else if (k === "error" && !Array.isArray(v)) {
      parts.push(errorBlock(v));
    } else if (Array.isArray(v) && v.every(isScalar)) {
      parts.push(`<h4>${heading(k)} (${v.length})</h4><pre class="body">${esc(v.map((x) => (typeof x === "string" ? x : JSON.stringify(x))).join("\n"))}</pre>`);
    } else if (!Array.isArray(v) && Object.values(v).every(isScalar)) {
      parts.push(`<h4>${heading(k)}</h4>${kvTable(v)}`);
    } else {
      if (k === "topics" && Array.isArray(v)) parts.push(recordsTable(v));
      parts.push(`<h4>${heading(k)}</h4>${jsonBlock(v)}`);
    }
  }
  return parts.join("");
}

function side(title, obj, kflSide) {
  if (!obj) return `<div><h4>${title}</h4><div class="muted">—</div></div>`;
  const parts = [`<h4>${title}</h4>`];
  const scalars = {};
  for (const [k, v] of Object.entries(obj)) {
    if (OWN_SECTIONS.includes(k)) continue;
    if (v !== null && typeof v === "object") continue;
    if (typeof v === "string" && (v.length > TEXT_BLOCK || v.includes("\n"))) continue;
    scalars[k] = v;
  }
  parts.push(kvTable(scalars));
  parts.push(nested(obj));
  if (obj.headers) parts.push(`<h4>Headers</h4>${kvTable(obj.headers, `${kflSide}.headers`)}`);
  if (obj.cookies && Object.keys(obj.cookies).length) parts.push(`<h4>Cookies</h4>${kvTable(obj.cookies)}`);
  if (obj.query && typeof obj.query === "object" && Object.keys(obj.query).length) parts.push(`<h4>Query</h4>${kvTable(obj.query)}`);
  if (typeof obj.query === "string") parts.push(`<h4>SQL</h4><pre class="body sql">${esc(obj.query)}</pre>`);
  if (obj.questions) parts.push(`<h4>Questions</h4>${kvTable(Object.fromEntries(obj.questions.map((q, i) => [i, `${q.name} ${q.type}`])))}`);
  if (obj.answers) parts.push(`<h4>Answers</h4>${kvTable(Object.fromEntries(obj.answers.map((a, i) => [i, `${a.name} ${a.type} ${a.data} ttl=${a.ttl}`])))}`);
  if (obj.query_text || obj.graphql_query) parts.push(`<h4>GraphQL</h4><pre class="body">${gqlHighlight(obj.query_text || obj.graphql_query)}</pre>`);
  if (obj.messages) parts.push(`<h4>Messages (${obj.messages.length})</h4><pre class="body">${esc(JSON.stringify(obj.messages, null, 2))}</pre>`);
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
