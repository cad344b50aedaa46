// The Targets tab: what is captured (pod regex, namespaces), changed live, and what each node applied.
import { ApiError, getJSON, headers } from "./api.js";
import { esc } from "./format.js";

const list = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

export class TargetsPanel {
  constructor(el) { this.el = el; this.render(); }

  render() {
    this.el.innerHTML = `
      <form id="targets-form" class="toolbar" title="Captured: pods whose name matches, in these namespaces, never in the excluded ones. All empty: everything.">
        <input id="targets-regex" placeholder="pod regex (e.g. ^checkout-)" spellcheck="false" aria-label="Pod regex">
        <input id="targets-ns" placeholder="namespaces, comma-separated (empty: all)" spellcheck="false" aria-label="Namespaces">
        <input id="targets-excluded" placeholder="excluded namespaces" spellcheck="false" aria-label="Excluded namespaces">
        <button class="primary" type="submit">Apply</button>
        <span id="targets-note" class="muted" aria-live="polite"></span>
      </form>
      <div id="targets-nodes" class="targets-nodes"></div>`;
    this.el.querySelector("#targets-form").onsubmit = (ev) => { ev.preventDefault(); this.apply(); };
  }

  async refresh() {
    const note = this.el.querySelector("#targets-note");
    try {
      const t = await getJSON("/api/targets");
      this.el.querySelector("#targets-regex").value = t.spec.pod_regex;
      this.el.querySelector("#targets-ns").value = t.spec.namespaces.join(", ");
      this.el.querySelector("#targets-excluded").value = t.spec.excluded_namespaces.join(", ");
      note.textContent = t.everything ? "capturing every pod" : `revision ${t.revision}`;
      this.drawNodes(t.nodes || []);
    } catch (e) {
      note.textContent = e instanceof ApiError ? e.message : String(e);
    }
  }

  drawNodes(nodes) {
    const rows = nodes.map((n) => `
      <tr data-node="${esc(n.node)}">
        <td>${esc(n.node)}</td><td>${esc(n.note)}</td>
        <td><code>${esc(n.filter || "(none)")}</code></td>
        <td class="pods">${(n.pods || []).map((p) => `${esc(p.namespace)}/${esc(p.name)} <span class="muted">${esc(p.ip)}</span>`).join("<br>")}</td>
        <td class="bad">${(n.errors || []).map(esc).join("<br>")}</td>
      </tr>`).join("");
    this.el.querySelector("#targets-nodes").innerHTML = nodes.length
      ? `<table class="grid"><thead><tr><th>Node</th><th>State</th><th>Kernel filter</th><th>Targeted pods</th><th>Errors</th></tr></thead><tbody>${rows}</tbody></table>`
      : `<p class="muted">No capture node has reported yet.</p>`;
  }

  async apply() {
    const note = this.el.querySelector("#targets-note");
    const spec = {
      pod_regex: this.el.querySelector("#targets-regex").value.trim(),
      namespaces: list(this.el.querySelector("#targets-ns").value),
      excluded_namespaces: list(this.el.querySelector("#targets-excluded").value),
    };
    const resp = await fetch("/api/targets", { method: "PUT", headers: headers({ "content-type": "application/json" }), body: JSON.stringify(spec) });
    const body = await resp.json().catch(() => null);
    if (!resp.ok) { note.textContent = (body && body.error) || `HTTP ${resp.status}`; note.classList.add("bad"); return; }
    note.classList.remove("bad");
    note.textContent = body.everything ? "capturing every pod" : `applied (revision ${body.revision}); nodes follow within seconds`;
    setTimeout(() => this.refresh(), 1500);
  }
}
