// The always-visible status: every service's health and what was lost upstream.
import { getJSON } from "./api.js";
import { esc } from "./format.js";

const POLL_MS = 5000;

export class StatusBar {
  constructor(el) { this.el = el; this.drops = {}; this.poll(); setInterval(() => this.poll(), POLL_MS); }

  async poll() {
    try {
      const h = await getJSON("/api/health");
      window.wiretideCapture = h.capture || {};
      const pills = Object.entries(h.services || {}).map(([name, s]) =>
        `<span class="pill ${s.status === "SERVING" ? "ok" : "bad"}" title="${esc(name)}: ${esc(s.status)}">${esc(name)}</span>`);
      pills.push(`<span class="pill ${h.nats?.connected ? "ok" : "bad"}" title="NATS">nats</span>`);
      const capErrors = Object.entries(h.capture?.errors || {});
      if (capErrors.length) pills.push(`<span class="pill bad" title="${esc(capErrors.map(([i, e]) => `${i}: ${e}`).join("\n"))}">capture errors ${capErrors.length}</span>`);
      // Captured but only counted (no dissector for them): shown, never an error.
      const counted = h.undissected || {};
      if (counted.total) {
        const byProto = Object.entries(counted.by_protocol || {}).map(([p, n]) => `${p}: ${n}`).join("\n");
        pills.push(`<span class="pill" id="undissected" title="${esc("packets counted, not dissected\n" + byProto)}">undissected ${counted.total}</span>`);
      }
      const entries = await getJSON("/api/entries", { limit: 1 }).catch(() => null);
      const c = entries?.completeness || {};
      this.drops = c.upstream_drops || {};
      const dropped = Object.values(this.drops).reduce((a, b) => a + b, 0);
      const evicted = Object.values(c.retention_deleted || {}).reduce((a, b) => a + b, 0);
      const title = Object.entries(this.drops).map(([k, v]) => `${k}: ${v}`).join("\n") || "nothing dropped upstream";
      pills.push(`<span class="pill ${dropped ? "warn" : "ok"}" id="drops" title="${esc(title)}">drops ${dropped}</span>`);
      if (evicted) pills.push(`<span class="pill warn" title="deleted by retention">retention ${evicted}</span>`);
      this.el.innerHTML = pills.join("");
      this.el.dataset.overall = h.status;
    } catch (e) {
      this.el.innerHTML = `<span class="pill bad" title="${esc(e.message)}">gateway unreachable</span>`;
      this.el.dataset.overall = "UNREACHABLE";
    }
  }
}
