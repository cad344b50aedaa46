// The trace view: a waterfall of one trace, with how each span was linked (header, syscall, timing)
// and the confidence of that link visible on the span.
import { getJSON } from "./api.js";
import { esc, latency } from "./format.js";

export async function renderTrace(el, note, traceId) {
  if (!traceId) { el.innerHTML = `<div class="empty">Open a trace from an entry's detail pane, or paste a trace id.</div>`; return; }
  let t;
  try { t = await getJSON(`/api/traces/${encodeURIComponent(traceId)}`); }
  catch (e) { el.innerHTML = `<div class="empty">Trace ${esc(traceId)}: ${esc(e.status === 404 ? "not found (yet)" : e.message)}</div>`; return; }
  const spans = t.spans || [];
  if (!spans.length) { el.innerHTML = `<div class="empty">Trace ${esc(traceId)} has no spans.</div>`; return; }
  const start = Math.min(...spans.map((s) => s.start_ns)), end = Math.max(...spans.map((s) => s.end_ns));
  const total = Math.max(1, end - start);
  const children = new Map(), ids = new Set(spans.map((s) => s.span_id));
  for (const s of spans) {
    const p = s.parent_span_id && ids.has(s.parent_span_id) ? s.parent_span_id : "";
    if (!children.has(p)) children.set(p, []);
    children.get(p).push(s);
  }
  const rows = [];
  const walk = (parent, depth) => {
    for (const s of (children.get(parent) || []).sort((a, b) => a.start_ns - b.start_ns)) { rows.push([s, depth]); walk(s.span_id, depth + 1); }
  };
  walk("", 0);
  note.textContent = `${spans.length} spans · ${latency(Math.round(total / 1000))}`;
  el.innerHTML = rows.map(([s, depth]) => {
    const left = ((s.start_ns - start) / total) * 100, width = Math.max(0.3, ((s.end_ns - s.start_ns) / total) * 100);
    const link = s.link || "", conf = s.confidence != null ? Number(s.confidence).toFixed(2) : "";
    return `<div class="span-row" title="${esc(s.name)} · ${esc(s.kind || "")} · link ${esc(link)} (confidence ${conf})">`
      + `<span class="span-name" data-indent="${depth * 14}">${esc(s.service_name || s.service || "")} <b>${esc(s.name)}</b></span>`
      + `<span><span class="span-bar ${s.error ? "err" : ""} ${link === "timing" ? "timing" : ""}" data-left="${left}" data-width="${width}"></span></span>`
      + `<span class="muted">${latency(Math.round((s.end_ns - s.start_ns) / 1000))} · ${esc(link)} ${conf}</span></div>`;
  }).join("");
  // Geometry through the CSSOM, not style attributes: the CSP allows no inline styles.
  for (const n of el.querySelectorAll("[data-indent]")) n.style.paddingLeft = `${n.dataset.indent}px`;
  for (const n of el.querySelectorAll("[data-left]")) {
    n.style.marginLeft = `${n.dataset.left}%`;
    n.style.width = `${n.dataset.width}%`;
  }
}
