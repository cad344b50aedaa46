// Wiretide's UI: wires the filter bar, the live table, the detail pane, the service map and the trace
// view together; keyboard: j/k move, Enter opens, / filters, Esc closes, Space pauses.
import { getJSON } from "./api.js";
import { LiveStream } from "./stream.js";
import { TrafficTable, MAX_ENTRIES } from "./table.js";
import { FilterBar } from "./filter.js";
import { StatusBar } from "./status.js";
import { closeDetail, showDetail } from "./detail.js";
import { renderMap } from "./servicemap.js";
import { findTraces, renderTrace } from "./traces.js";
import { ConsolePanel, watchEntryLinks } from "./console.js";
import { TargetsPanel } from "./targets.js";
import { TlsPanel } from "./tls.js";
import { RecordingsPanel } from "./recordings.js";
import { esc, kflString, loadProtocols } from "./format.js";

const $ = (id) => document.getElementById(id);
const FLUSH_MS = 100; // live entries join the table at most this often (render budget)
const HISTORY_PAGE = 1000; // entries loaded from the store when a filter is applied

const theme = localStorage.getItem("wiretide.theme") || "dark";
document.documentElement.dataset.theme = theme;
$("theme").onclick = () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  document.documentElement.dataset.theme = next;
  localStorage.setItem("wiretide.theme", next);
};

let toastTimer = null;
function toast(text) {
  const t = $("toast");
  t.textContent = text; t.hidden = false;
  clearTimeout(toastTimer); toastTimer = setTimeout(() => { t.hidden = true; }, 2500);
}

const state = { paused: false, pending: [], buffer: [], received: 0, rate: 0, query: "", view: "traffic", traceServices: null };

const table = new TrafficTable({
  viewport: $("viewport"), rows: $("rows"), spacer: $("spacer"),
  onSelect: (e) => showDetail($("detail"), e, { onFilter: (c) => filter.append(c), onTrace: openTrace, toast }),
  onFilter: (clause) => filter.append(clause),
});

const filter = new FilterBar({
  input: $("kfl"), error: $("kfl-error"), suggest: $("kfl-suggest"), historyList: $("history"),
  historyBtn: $("history-btn"), applyBtn: $("apply"), onApply: (q) => applyQuery(q),
});

new StatusBar($("status"));

const stream = new LiveStream({
  onEntry: (e) => {
    state.received += 1;
    if (state.paused) {
      state.pending.push(e);
      if (state.pending.length > MAX_ENTRIES) state.pending.shift();
      updatePending();
    } else state.buffer.push(e);
  },
  onState: (s) => {
    const c = $("conn");
    c.className = "conn " + (s.state === "live" ? "up" : "down");
    c.textContent = s.state === "live" ? "● live"
      : s.state === "reconnecting" ? `○ ${s.reason}; reconnecting in ${(s.inMs / 1000).toFixed(1)} s`
      : s.state === "stopped" ? `○ stream stopped: ${s.reason}` : "○ connecting…";
  },
  onError: (msg) => toast(`stream refused: ${msg.error}`),
});

setInterval(() => {
  if (state.buffer.length) { table.add(state.buffer); state.buffer = []; refreshEmpty(); }
  $("count").textContent = `${table.length.toLocaleString()} entries`;
}, FLUSH_MS);
let lastCount = 0;
setInterval(() => {
  state.rate = state.received - lastCount; lastCount = state.received;
  $("rate").textContent = `${state.rate.toLocaleString()} /s`;
}, 1000);

function updatePending() {
  const p = $("pending");
  p.hidden = !state.pending.length;
  p.textContent = `${state.pending.length.toLocaleString()} new`;
}

function setPaused(paused) {
  state.paused = paused;
  $("pause").textContent = paused ? "Resume" : "Pause";
  if (!paused && state.pending.length) { table.add(state.pending); state.pending = []; }
  updatePending();
}
$("pause").onclick = () => setPaused(!state.paused);
$("pending").onclick = () => setPaused(false);
$("follow").onchange = (ev) => table.setOrder(ev.target.checked);
$("clear").onclick = () => { table.clear(); refreshEmpty(); };

function captureErrors() {
  const errors = Object.entries(window.wiretideCapture?.errors || {});
  if (!errors.length) return "";
  return `<b class="s5">The capture service reports: ${errors.map(([i, e]) => `${esc(i)}: ${esc(e)}`).join("; ")}</b><br>`;
}

function refreshEmpty() {
  const empty = $("empty");
  if (table.length) { empty.hidden = true; return; }
  const overall = $("status").dataset.overall;
  empty.hidden = false;
  empty.innerHTML = state.query
    ? `<h3>Nothing matches</h3><code>${esc(state.query)}</code><br>New matching entries appear here live.`
    : `<h3>No traffic seen yet</h3>Wiretide shows every API call it captures, live.<br>
       If you expected traffic: the capture service may be on the wrong interface
       (<code>WIRETIDE_CAPTURE_INTERFACES</code>), may lack privileges (it needs root or CAP_NET_RAW),
       or a BPF filter (<code>WIRETIDE_CAPTURE_BPF</code>) may exclude it.<br>
       ${overall && overall !== "SERVING" ? `<b class="s5">Some services are not healthy — see the status bar.</b><br>` : ""}
       ${captureErrors()}
       Try <code>wiretide up --pcap FILE</code> to explore a capture, or <code>make demo</code> for a live mini-cluster.`;
}

async function applyQuery(q) {
  state.query = q;
  stream.close(); // nothing of the old query may arrive while the new one loads
  state.pending = []; state.buffer = [];
  updatePending();
  try {
    const page = await getJSON("/api/entries", { q, limit: HISTORY_PAGE });
    state.buffer = [];
    table.replace(page.entries.slice().reverse());
    $("count").title = `scanned ${page.completeness.scanned}${page.completeness.exhausted ? "" : " (more in the store)"}`;
  } catch (e) { toast(e.message); table.clear(); }
  refreshEmpty();
  stream.open(q);
  if (state.view === "map") drawMap();
}

// A map node is a workload, a service, a pod or a bare address: match an end by any of them.
function endClause(side, node) {
  const n = kflString(node.name || node.id);
  const ns = node.namespace ? ` && ${side}.namespace == ${kflString(node.namespace)}` : "";
  return `((${side}.workload.name == ${n} || ${side}.service.name == ${n} || ${side}.name == ${n} || ${side}.ip == ${n})${ns})`;
}

function drawMap() {
  renderMap($("map"), $("map-note"), state.query, Number($("map-window").value), (edge, src, dst) => {
    filter.input.value = `${endClause("src", src)} && ${endClause("dst", dst)}`;
    switchView("traffic");
    filter.apply();
  }, { highlight: state.traceServices, onNode: (node) => searchTraces(node.id) });
}
$("map-refresh").onclick = drawMap;
$("map-window").onchange = drawMap;

// The trace view: search, waterfall, a span's entry, and the trace's services on the map.
async function openTrace(id) {
  $("trace-id").value = id;
  if (state.view !== "trace") switchView("trace");
  $("trace-detail").hidden = true;
  const spans = await renderTrace($("trace"), $("trace-note"), id, { onSpan: openSpan });
  state.traceServices = spans.length ? new Set(spans.map((s) => s.service)) : null;
  $("trace-map").disabled = !spans.length;
}
async function openSpan(span) {
  if (!span.entry_id) return;
  try {
    const e = await getJSON(`/api/entries/${encodeURIComponent(span.entry_id)}`);
    showDetail($("trace-detail"), e, { onFilter: (c) => { filter.append(c); }, onTrace: openTrace, toast });
  } catch (err) { toast(`entry ${span.entry_id}: ${err.status === 404 ? "not stored (yet)" : err.message}`); }
}
function searchTraces(service) {
  if (service !== undefined) $("trace-service").value = service;
  if (state.view !== "trace") switchView("trace");
  return findTraces($("trace-list"), $("trace-note"), {
    query: state.query, service: $("trace-service").value.trim(), min: $("trace-min").value.trim(),
    max: $("trace-max").value.trim(), errors: $("trace-errors").checked,
  }, openTrace);
}
$("trace-search").onsubmit = (ev) => { ev.preventDefault(); searchTraces(); };
$("trace-open").onclick = () => openTrace($("trace-id").value.trim());
$("trace-map").onclick = () => switchView("map");

function switchView(view) {
  state.view = view;
  document.querySelectorAll(".tabs button").forEach((b) => b.classList.toggle("active", b.dataset.view === view));
  document.querySelectorAll(".view").forEach((v) => v.classList.toggle("active", v.id === `view-${view}`));
  if (view === "map") drawMap();
  if (view === "trace" && !$("trace").innerHTML) {
    renderTrace($("trace"), $("trace-note"), $("trace-id").value.trim());
    if (!$("trace-list").innerHTML) searchTraces();
  }
  if (view === "console") consolePanel.refresh();
  if (view === "targets") targetsPanel.refresh();
  if (view === "tls") tlsPanel.refresh();
  if (view === "recordings") recordingsPanel.show(); else recordingsPanel.hide();
}
document.querySelectorAll(".tabs button").forEach((b) => { b.onclick = () => switchView(b.dataset.view); });

document.addEventListener("keydown", (ev) => {
  const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement?.tagName);
  if (ev.key === "Escape") { closeDetail($("detail")); if (typing) document.activeElement.blur(); return; }
  if (typing) return;
  if (ev.key === "/") { ev.preventDefault(); $("kfl").focus(); }
  else if (state.view !== "traffic") return;
  else if (ev.key === "j") table.move(1);
  else if (ev.key === "k") table.move(-1);
  else if (ev.key === "Enter" && table.selectedId) table.select(table.indexOf(table.selectedId));
  else if (ev.key === " ") { ev.preventDefault(); setPaused(!state.paused); }
});

const targetsPanel = new TargetsPanel($("targets"));
const tlsPanel = new TlsPanel($("tls"));
// A recording's "Entries": the traffic view filtered by record("name").
const recordingsPanel = new RecordingsPanel($("recordings"), {
  onOpen: (q) => { filter.input.value = q; switchView("traffic"); filter.apply(); },
});
const consolePanel = new ConsolePanel({ log: $("console-log"), form: $("console-form"), input: $("console-input"), note: $("console-note") });
// An entry link (#entry=ID, as the console's answers cite entries): the traffic view with its detail open.
watchEntryLinks(async (id) => {
  try { const e = await getJSON(`/api/entries/${encodeURIComponent(id)}`); switchView("traffic"); table.onSelect(e); }
  catch (err) { toast(`entry ${id}: ${err.status === 404 ? "not found" : err.message}`); }
});

// A handle for scripts and the browser tests: the table's contents and the stream's state.
window.wiretide = { table, stream, state };

// Statuses read by the protocol table: load it before the first entries are drawn.
loadProtocols(getJSON).then(() => applyQuery(filter.query));
