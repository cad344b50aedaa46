// The service map: workloads as nodes grouped by namespace, edges with protocol, rate, error rate and
// latency. Prefers the tracer's map; falls back to the gateway's own edge statistics.
import { getJSON } from "./api.js";
import { esc } from "./format.js";

const LABELS_UP_TO = 16; // beyond this many edges, labels move to hover titles to stay readable
const NODE_W = 170, NODE_H = 34, COL_GAP = 150, ROW_GAP = 22, PAD = 30;

function splitName(full) {
  const i = full.indexOf("/");
  return i < 0 ? { namespace: "", name: full } : { namespace: full.slice(0, i), name: full.slice(i + 1) };
}

async function loadMap(query, windowS) {
  try {
    const m = await getJSON("/api/servicemap", { q: query, window: `${windowS}s` });
    return { source: "tracer", nodes: m.nodes || [], edges: m.edges || [] };
  } catch {
    const since = `timestamp > now() - duration("${windowS}s")`;
    const stats = await getJSON("/api/stats", { by: "edge", q: query ? `(${query}) && ${since}` : since });
    const nodes = new Map();
    const edges = stats.groups.map((g) => {
      for (const end of [g.source, g.destination]) if (!nodes.has(end)) nodes.set(end, { id: end, ...splitName(end) });
      return { source: g.source, destination: g.destination, protocol: g.protocol, request_rate: g.rate_per_s,
        error_rate: g.error_rate, p50_ms: g.latency_ms.p50, p95_ms: g.latency_ms.p95, p99_ms: g.latency_ms.p99, requests: g.count };
    });
    return { source: "gateway statistics", nodes: [...nodes.values()], edges };
  }
}

// `highlight`: names of services to mark (a trace's), `onNode(node)`: a node picked (its traces).
export async function renderMap(el, note, query, windowS, onEdge, { highlight = null, onNode = null } = {}) {
  let m;
  try { m = await loadMap(query, windowS); } catch (e) { el.innerHTML = `<div class="empty">Cannot load the map: ${esc(e.message)}</div>`; return; }
  note.textContent = `${m.nodes.length} workloads, ${m.edges.length} edges (from ${m.source})`;
  if (!m.nodes.length) { el.innerHTML = `<div class="empty"><h3>No calls in this window</h3>Traffic appears here as soon as entries arrive.</div>`; return; }
  const byNs = new Map();
  for (const n of m.nodes) { const ns = n.namespace || "(no namespace)"; if (!byNs.has(ns)) byNs.set(ns, []); byNs.get(ns).push(n); }
  const pos = new Map();
  let col = 0, maxY = 0;
  const boxes = [];
  for (const [ns, list] of [...byNs.entries()].sort()) {
    const x = PAD + col * (NODE_W + COL_GAP);
    list.sort((a, b) => (a.name || a.id).localeCompare(b.name || b.id));
    list.forEach((n, i) => { const y = PAD + 24 + i * (NODE_H + ROW_GAP); pos.set(n.id, { x, y }); maxY = Math.max(maxY, y + NODE_H); });
    boxes.push(`<rect class="nsbox" x="${x - 10}" y="${PAD}" width="${NODE_W + 20}" height="${list.length * (NODE_H + ROW_GAP) + 24}" rx="6"/>`
      + `<text class="nslabel" x="${x}" y="${PAD + 15}">${esc(ns)}</text>`);
    col += 1;
  }
  const width = PAD * 2 + col * (NODE_W + COL_GAP), height = maxY + PAD * 2;
  const edges = m.edges.map((e, i) => {
    const a = pos.get(e.source), b = pos.get(e.destination);
    if (!a || !b) return "";
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
    const self = e.source === e.destination;
    const sameColumn = !self && a.x === b.x;
    const bulge = 50 + Math.abs(y2 - y1) / 4;
    const d = sameColumn ? `M${x1} ${y1} C ${x1 + bulge} ${y1}, ${x1 + bulge} ${b.y + NODE_H / 2}, ${x1} ${b.y + NODE_H / 2}`
      : self ? `M${x1} ${y1} C ${x1 + 60} ${y1 - 50}, ${x1 + 60} ${y1 + 50}, ${x1} ${y1 + 4}`
      : `M${x1} ${y1} C ${(x1 + x2) / 2 + 40} ${y1}, ${(x1 + x2) / 2 - 40} ${y2}, ${x2} ${y2}`;
    const err = (e.error_rate || 0) > 0.05;
    const hot = highlight && [e.source, e.destination].every((id) => { const n = m.nodes.find((x) => x.id === id); return n && highlight.has(n.name || n.id); });
    const rate = (e.request_rate || 0) >= 0.1 ? `${e.request_rate.toFixed(1)}/s` : `${e.requests || 0} req`;
    const label = `${e.protocol || ""} ${rate} ${((e.error_rate || 0) * 100).toFixed(0)}% err p95 ${e.p95_ms != null ? e.p95_ms.toFixed(1) : "–"}ms`;
    if (m.edges.length > LABELS_UP_TO) return `<g data-edge="${i}"><path class="edge${err ? " err" : ""}${hot ? " hot" : ""}" d="${d}" stroke-width="1.5"><title>${esc(e.source)} → ${esc(e.destination)}\n${esc(label)}</title></path></g>`;
    const lx = self ? x1 + 64 : sameColumn ? x1 + bulge : (x1 + x2) / 2, ly = self ? y1 : (y1 + y2) / 2 - 4;
    return `<g data-edge="${i}"><path class="edge${err ? " err" : ""}${hot ? " hot" : ""}" d="${d}" stroke-width="${1.5 + Math.min(4, Math.log10(1 + (e.requests || 1)))}"><title>${esc(e.source)} → ${esc(e.destination)}\n${esc(label)}</title></path>`
      + `<text class="elabel" x="${lx}" y="${ly}" text-anchor="middle">${esc(label)}</text></g>`;
  });
  const nodes = m.nodes.map((n, i) => {
    const p = pos.get(n.id);
    const hot = highlight && highlight.has(n.name || n.id) ? " hot" : "";
    return `<g class="node${hot}" data-node="${i}"><title>${esc(n.id)}: click for its traces</title><rect x="${p.x}" y="${p.y}" width="${NODE_W}" height="${NODE_H}" rx="5"/>`
      + `<text x="${p.x + 10}" y="${p.y + 21}">${esc((n.name || n.id).slice(0, 22))}</text></g>`;
  });
  el.innerHTML = `<svg width="${width}" height="${height}" xmlns="http://www.w3.org/2000/svg">${boxes.join("")}${edges.join("")}${nodes.join("")}</svg>`;
  el.querySelector("svg").addEventListener("click", (ev) => {
    const node = ev.target.closest("[data-node]");
    if (node && onNode) { onNode(m.nodes[Number(node.dataset.node)]); return; }
    const g = ev.target.closest("[data-edge]");
    if (!g) return;
    const e = m.edges[Number(g.dataset.edge)];
    const byId = (id) => m.nodes.find((n) => n.id === id) || { id, ...splitName(id) };
    onEdge(e, byId(e.source), byId(e.destination));
  });
}
