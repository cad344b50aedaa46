// The TLS tab: the decryptability report — per node and process, the TLS library, read or why not.
import { ApiError, getJSON } from "./api.js";
import { esc } from "./format.js";

export class TlsPanel {
  constructor(el) {
    this.el = el;
    this.el.innerHTML = `
      <div class="toolbar">
        <label><input type="checkbox" id="tls-unread"> only what is not read</label>
        <button id="tls-refresh">Refresh</button>
        <span id="tls-note" class="muted" aria-live="polite"></span>
      </div>
      <div id="tls-nodes"></div>`;
    this.el.querySelector("#tls-refresh").onclick = () => this.refresh();
    this.el.querySelector("#tls-unread").onchange = () => this.draw();
    this.report = null;
  }

  async refresh() {
    const note = this.el.querySelector("#tls-note");
    note.textContent = "scanning…";
    try {
      this.report = await getJSON("/api/tls");
      note.textContent = "";
      this.draw();
    } catch (e) {
      note.textContent = e instanceof ApiError ? e.message : String(e);
    }
  }

  draw() {
    if (!this.report) return;
    const unread = this.el.querySelector("#tls-unread").checked;
    const parts = this.report.nodes.map((n) => {
      if (n.error) return `<h3>${esc(n.node || "node")}</h3><p class="bad">unreachable: ${esc(n.error)}</p>`;
      const s = n.summary;
      const state = n.ebpf_running ? "eBPF source running" : esc(n.ebpf_state);
      const rows = n.processes.flatMap((p) => p.libraries
        .filter((lib) => !unread || !lib.hooked)
        .map((lib) => `<tr class="${lib.hooked ? "ok" : ""}" data-pid="${p.pid}" data-kind="${esc(lib.kind)}">
          <td>${p.pid}</td><td>${esc(p.comm)}</td><td title="${esc(lib.path)}">${esc(lib.kind)}</td>
          <td>${esc(lib.version)}</td><td>${lib.hooked ? "read" : "not read"}</td><td>${esc(lib.reason)}</td>
          <td class="muted">${esc(p.container_id.slice(0, 12))}</td></tr>`));
      return `<h3 data-node="${esc(n.node)}">${esc(n.node || "node")} — ${s.readable}/${s.processes} TLS processes read · ${state}${n.truncated ? " · report cut (too many processes)" : ""}</h3>
        <table class="grid tls"><thead><tr><th>PID</th><th>Process</th><th>Library</th><th>Version</th><th>Plaintext</th><th>Why not</th><th>Container</th></tr></thead>
        <tbody>${rows.join("") || `<tr><td colspan="7" class="muted">nothing to show</td></tr>`}</tbody></table>`;
    });
    this.el.querySelector("#tls-nodes").innerHTML = parts.join("") || `<p class="muted">No capture node answered.</p>`;
  }
}
