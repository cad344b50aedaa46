// The trace view: recent traces found by the filter bar's KFL query, a service, a duration range and
// errors; a waterfall of one trace where every span shows how its parent was chosen (header, syscall,
// timing, entry, root) and how sure that is; a span opens the entry it was made from.
import { getJSON } from "./api.js";
import { esc, latency, clock } from "./format.js";

// A timing link below this confidence is drawn as doubtful (the tracer's confidence is a probability-
// like score: below one half, another parent was about as likely).
const DOUBTFUL = 0.5;

function linkBadge(s) {
  const link = s.link || "root", conf = s.confidence != null ? Number(s.confidence) : 1;
  const low = link === "timing" && conf < DOUBTFUL ? " low" : "";
  const text = link === "timing" ? `timing ${conf.toFixed(2)}` : link;
  return `<span class="link ${esc(link)}${low}" data-link="${esc(link)}" data-confidence="${conf}">${esc(text)}</span>`;
}

// Recent traces matching the search; `onOpen(traceId)` when one is picked.
export async function findTraces(listEl, note, { query, service, min, max, errors }, onOpen) {
  let answer;
  try {
    answer = await getJSON("/api/traces", {
      q: query, service, min_duration: min, max_duration: max, error: errors ? "true" : "", limit: 200,
    });
  } catch (e) { listEl.innerHTML = `<div class="muted trace-item">${esc(e.message)}</div>`; return []; }
  const traces = answer.traces || [];
  const evicted = answer.completeness?.traces_evicted || 0;
  note.textContent = `${traces.length} traces${evicted ? ` (${evicted.toLocaleString()} older ones forgotten)` : ""}`;
  if (!traces.length) { listEl.innerHTML = `<div class="muted trace-item">No trace matches.</div>`; return traces; }
  listEl.innerHTML = traces.map((t) => `<div class="trace-item" data-trace="${esc(t.trace_id)}"
      title="${esc(t.trace_id)} · lowest link confidence ${Number(t.min_confidence).toFixed(2)}">
      ${t.error ? `<b class="err">✖</b> ` : ""}<b>${esc(t.root_service)}</b> ${esc(t.root_name)}<br>
      <span class="muted">${clock(t.start_ns)} · ${latency(t.duration_us)} · ${t.span_count} spans ·
      confidence ≥ ${Number(t.min_confidence).toFixed(2)}</span></div>`).join("");
  listEl.onclick = (ev) => {
    const item = ev.target.closest("[data-trace]");
    if (!item) return;
    for (const n of listEl.querySelectorAll(".trace-item.active")) n.classList.remove("active");
    item.classList.add("active");
    onOpen(item.dataset.trace);
  };
  return traces;
}

// The waterfall of one trace; `onSpan(span)` when a span is picked. Returns the spans shown.
export async function renderTrace(el, note, traceId, { onSpan } = {}) {
  if (!traceId) { el.innerHTML = `<div class="empty">Find traces above, open one from an entry's detail pane, or paste a trace id.</div>`; return []; }
  let t;
  try { t = await getJSON(`/api/traces/${encodeURIComponent(traceId)}`); }
  catch (e) { el.innerHTML = `<div class="empty">Trace ${esc(traceId)}: ${esc(e.status === 404 ? "not found (yet)" : e.message)}</div>`; return []; }
  const spans = t.spans || [];
  if (!spans.length) { el.innerHTML = `<div class="empty">Trace ${esc(traceId)} has no spans.</div>`; return []; }
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
    for (const s of (children.get(parent) || []).sort((a, b) => a.start_ns - b.start_ns || (a.kind === "client" ? -1 : 1))) {
      rows.push([s, depth]); walk(s.span_id, depth + 1);
    }
  };
  walk("", 0);
  const roots = (children.get("") || []).length;
  const timing = spans.filter((s) => s.link === "timing");
  const weakest = Math.min(...spans.map((s) => (s.confidence != null ? s.confidence : 1)));
  note.textContent = `${traceId} · ${spans.length} spans · ${latency(Math.round(total / 1000))}`
    + ` · ${timing.length} timing links · lowest confidence ${weakest.toFixed(2)}`
    + (roots > 1 ? ` · ${roots} roots` : "");
  el.innerHTML = rows.map(([s, depth], i) => {
    const left = ((s.start_ns - start) / total) * 100, width = Math.max(0.3, ((s.end_ns - s.start_ns) / total) * 100);
    const link = s.link || "", conf = s.confidence != null ? Number(s.confidence).toFixed(2) : "";
    return `<div class="span-row" data-row="${i}" data-entry="${esc(s.entry_id || "")}" title="${esc(s.name)} · ${esc(s.kind || "")} · link ${esc(link)} (confidence ${conf})">`
      + `<span class="span-name" data-indent="${depth * 14}">${esc(s.service_name || s.service || "")} <b>${esc(s.name)}</b></span>`
      + `<span><span class="span-bar ${s.error ? "err" : ""} ${link === "timing" ? "timing" : ""}" data-left="${left}" data-width="${width}"></span></span>`
      + `<span class="muted">${latency(Math.round((s.end_ns - s.start_ns) / 1000))} · ${s.kind === "client" ? "→" : "⇢"} ${linkBadge(s)}</span></div>`;
  }).join("");
  // Geometry through the CSSOM, not style attributes: the CSP allows no inline styles.
  for (const n of el.querySelectorAll("[data-indent]")) n.style.paddingLeft = `${n.dataset.indent}px`;
  for (const n of el.querySelectorAll("[data-left]")) {
    n.style.marginLeft = `${n.dataset.left}%`;
    n.style.width = `${n.dataset.width}%`;
  }
  el.onclick = (ev) => {
    const row = ev.target.closest("[data-row]");
    if (!row || !onSpan) return;
    for (const n of el.querySelectorAll(".span-row.active")) n.classList.remove("active");
    row.classList.add("active");
    onSpan(rows[Number(row.dataset.row)][0]);
  };
  return spans;
}
