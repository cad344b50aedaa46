// Network agents in the UI: the marks agents put on entries (onItemQueried → test.pass / test.fail),
// shown in the table and the detail pane, and the Agents tab (list, edit, enable, delete, live log,
// templates, and the LLM's drafts and proposed changes). Marks are asked for in batches for the rows
// on screen, once per entry, and only while some agent defines onItemQueried. A draft or a proposed
// change is shown with its trial run and stored only when the user saves or approves it, and only
// over the revision it was based on (a new agent never replaces an existing one).
import { esc } from "./format.js";
import { getJSON, postJSON, headers, ApiError } from "./api.js";

const BATCH_MS = 300; // rows that appear within this time share one request
const MAX_IDS = 200; // ids per request (the API takes 500)
const AGENTS_TTL_MS = 10000; // how long the list of agents (and whether any marks entries) is reused
const LOG_LINES = 500; // lines kept in the log view

class Marks {
  constructor() {
    this.byId = new Map(); // entry id -> [{agent, result, note}] (empty: asked, none)
    this.wanted = new Set();
    this.timer = null;
    this.listeners = [];
    this.active = false;
    this.checked = 0;
  }
  onChange(fn) { this.listeners.push(fn); }
  get(id) { return this.byId.get(id) || []; }

  async enabled() {
    if (Date.now() - this.checked > AGENTS_TTL_MS) {
      this.checked = Date.now();
      try {
        const { agents } = await getJSON("/api/agents");
        this.active = agents.some((a) => a.state === "running" && a.hooks.includes("onItemQueried"));
      } catch { this.active = false; }
    }
    return this.active;
  }

  want(ids) {
    for (const id of ids) if (!this.byId.has(id)) this.wanted.add(id);
    if (this.wanted.size && !this.timer) this.timer = setTimeout(() => this.fetch(), BATCH_MS);
  }

  async fetch() {
    this.timer = null;
    const ids = [...this.wanted].slice(0, MAX_IDS);
    ids.forEach((id) => this.wanted.delete(id));
    if (!ids.length || !(await this.enabled())) { this.wanted.clear(); return; }
    try {
      const { marks } = await postJSON("/api/agents/annotations", { ids });
      for (const id of ids) this.byId.set(id, marks[id] || []);
      this.listeners.forEach((fn) => fn());
    } catch { /* agents away: no marks */ }
    if (this.wanted.size) this.timer = setTimeout(() => this.fetch(), BATCH_MS);
  }

  badge(id) {
    const list = this.get(id);
    if (!list.length) return "";
    const failed = list.filter((m) => m.result === "fail");
    const title = list.map((m) => `${m.agent}: ${m.result}${m.note ? " — " + m.note : ""}`).join("\n");
    return ` <span class="mark ${failed.length ? "fail" : "pass"}" title="${esc(title)}">${failed.length ? "✗" : "✓"}</span>`;
  }

  rows(id) {
    return this.get(id).map((m) => `<tr><td>${esc(m.agent)}</td><td class="${m.result === "fail" ? "serr" : "s2"}">${esc(m.result)}${m.note ? " — " + esc(m.note) : ""}</td></tr>`).join("");
  }
}

export const marks = new Marks();

async function send(method, path, doc) {
  const resp = await fetch(path, { method, headers: headers({ "content-type": "application/json" }), body: doc ? JSON.stringify(doc) : undefined });
  const body = await resp.json().catch(() => null);
  if (!resp.ok) throw new ApiError(resp.status, body);
  return body;
}

const TEMPLATE = `// A new agent: hooks are global functions; see docs/agents.md.
function onItemCaptured(entry) {
  if (kfl.match("http && status_code >= 500", entry)) console.log("server error", entry.path);
}
`;

export class AgentsPanel {
  constructor(root) {
    this.root = root;
    this.socket = null;
    this.proposal = null; // {kind: "draft"|"improve", name, base_revision, source, env, enabled, body}
    this.templates = [];
    root.innerHTML = `
      <div class="toolbar"><button data-act="new" class="primary">New agent</button>
        <select class="agents-template" aria-label="Start from a template"><option value="">Start from a template…</option></select>
        <button data-act="describe">Draft with the LLM</button><button data-act="refresh">Refresh</button>
        <span class="agents-note muted"></span></div>
      <div class="agents-ask" hidden>
        <div class="toolbar"><label class="agents-ask-label">Describe the agent</label>
          <button data-act="propose" class="primary">Draft</button><button data-act="close-ask">Cancel</button>
          <span class="agents-ask-status muted"></span></div>
        <textarea class="agents-describe" rows="3" aria-label="What the agent should do"></textarea>
      </div>
      <div class="agents-result" hidden>
        <div class="toolbar"><strong class="agents-summary"></strong>
          <button data-act="retry">Try again</button><button data-act="approve" class="primary" hidden>Approve</button>
          <button data-act="discard">Discard</button></div>
        <pre class="agents-diff" hidden></pre><pre class="agents-output"></pre>
      </div>
      <table class="agents-list"><thead><tr><th>Name</th><th>State</th><th>Items</th><th>Pass</th><th>Fail</th><th>Hooks / error</th><th></th></tr></thead><tbody></tbody></table>
      <div class="agents-edit" hidden>
        <div class="toolbar"><input class="agents-name" placeholder="name" aria-label="Agent name">
          <button data-act="save" class="primary">Save</button><button data-act="cancel">Cancel</button>
          <span class="agents-problem serr"></span></div>
        <textarea class="agents-source" rows="18" spellcheck="false" aria-label="Agent source"></textarea>
      </div>
      <h4 class="agents-log-title" hidden></h4><pre class="agents-log" hidden></pre>`;
    this.$ = (sel) => root.querySelector(sel);
    root.addEventListener("click", (ev) => this.click(ev));
    this.$(".agents-template").addEventListener("change", (ev) => this.fromTemplate(ev.target.value));
    document.querySelector('.tabs button[data-view="agents"]')?.addEventListener("click", () => this.refresh());
  }

  async loadTemplates() {
    if (this.templates.length) return;
    try {
      ({ templates: this.templates } = await getJSON("/api/agents/templates"));
      this.$(".agents-template").innerHTML = `<option value="">Start from a template…</option>` +
        this.templates.map((t) => `<option value="${esc(t.name)}" title="${esc(t.summary)}">${esc(t.name)} — ${esc(t.summary)}</option>`).join("");
    } catch { /* agents away: no templates offered */ }
  }

  fromTemplate(name) {
    const t = this.templates.find((x) => x.name === name);
    if (t) this.edit("", t.source, t.name);
    this.$(".agents-template").value = "";
  }

  ask(kind, name) {
    this.proposal = { kind, name: name || "", previous: null };
    this.$(".agents-ask").hidden = false;
    this.$(".agents-ask-label").textContent = kind === "draft" ? "Describe the agent" : `What should change in ${name}?`;
    this.$("[data-act=propose]").textContent = kind === "draft" ? "Draft" : "Propose a change";
    this.$(".agents-ask-status").textContent = "";
    this.$(".agents-describe").focus();
  }

  // Ask the LLM (a draft, or a change to an agent) and show what it proposes, tried on recent traffic.
  async propose() {
    const p = this.proposal;
    const text = this.$(".agents-describe").value.trim();
    if (!p || !text) return;
    const body = p.kind === "draft" ? { description: text } : { instruction: text };
    if (p.previous) body.previous = p.previous;
    const status = this.$(".agents-ask-status");
    status.textContent = "Asking the model and trying its answer on recent traffic…";
    this.$(".agents-result").hidden = true;
    let doc;
    try {
      doc = await send("POST", p.kind === "draft" ? "/api/agents/draft" : `/api/agents/${encodeURIComponent(p.name)}/improve`, body);
    } catch (e) {
      const b = e.body || {};
      status.textContent = b.error ? `${b.error}${b.answer ? " — the model said: " + b.answer : ""}` : e.message;
      this.showResult(null, b.retry ? "No code in the answer" : "Failed");
      return;
    }
    status.textContent = doc.explanation || "";
    Object.assign(p, { source: doc.source, base_revision: doc.base_revision, env: doc.env, enabled: doc.enabled, previous: null });
    if (doc.test.error) p.previous = { source: doc.source, error: doc.test.error };
    if (p.kind === "draft") this.edit("", doc.source);
    this.showResult(doc, "");
  }

  showResult(doc, failure) {
    const p = this.proposal;
    this.$(".agents-result").hidden = false;
    const diff = this.$(".agents-diff");
    const t = doc && doc.test;
    const where = t && t.line ? ` at line ${t.line}${t.column ? ", column " + t.column : ""}` : "";
    this.$(".agents-summary").textContent = !t ? failure
      : `Tried on ${t.entries} recent entries: ${t.passed} passed, ${t.failed} failed` +
        (t.error ? ` — ${t.error_kind === "syntax" ? "syntax error" : "the agent failed"}${where}: ${t.error}` : "");
    this.$(".agents-output").textContent = t ? t.lines.map((x) => `${x.stream === "log" ? "" : "[" + x.stream + "] "}${x.text}`).join("\n") +
      (t.lines_dropped ? `\n… ${t.lines_dropped} more lines` : "") : "";
    diff.hidden = !(p && p.kind === "improve" && doc);
    if (!diff.hidden) {
      diff.innerHTML = (doc.diff || "(no change proposed)\n").split("\n").map((l) =>
        `<span class="${l.startsWith("+") && !l.startsWith("+++") ? "s2" : l.startsWith("-") && !l.startsWith("---") ? "serr" : ""}">${esc(l)}</span>`).join("\n");
    }
    this.$("[data-act=approve]").hidden = !(p && p.kind === "improve" && doc && doc.diff && !t.error);
    this.$("[data-act=retry]").hidden = !(!t || t.error);
  }

  async approve() {
    const p = this.proposal;
    if (!p || p.kind !== "improve") return;
    try {
      await send("PUT", `/api/agents/${encodeURIComponent(p.name)}`, { source: p.source, env: p.env, enabled: p.enabled, base_revision: p.base_revision });
      this.discard();
      await this.refresh();
      this.$(".agents-note").textContent = `Applied the change to ${p.name}.`;
    } catch (e) { this.$(".agents-summary").textContent = (e.body && e.body.error) || e.message; }
  }

  discard() {
    this.proposal = null;
    this.$(".agents-ask").hidden = true;
    this.$(".agents-result").hidden = true;
    this.$(".agents-describe").value = "";
  }

  async refresh() {
    this.loadTemplates();
    try {
      const { agents } = await getJSON("/api/agents");
      this.$(".agents-note").textContent = agents.length ? "" : "No agents yet: New agent, or `wiretide agents put FILE.js`.";
      this.$(".agents-list tbody").innerHTML = agents.map((a) => `<tr data-name="${esc(a.name)}">
        <td>${esc(a.name)}</td><td class="${a.state === "failed" ? "serr" : a.state === "running" ? "s2" : "muted"}">${esc(a.state)}</td>
        <td>${a.items.toLocaleString()}</td><td>${a.tests_passed}</td><td>${a.tests_failed}</td>
        <td>${esc(a.last_error || a.hooks.join(", "))}${replicaStates(a)}</td>
        <td><button data-act="edit">Edit</button><button data-act="${a.enabled ? "disable" : "enable"}">${a.enabled ? "Disable" : "Enable"}</button>
          <button data-act="improve">Improve</button><button data-act="logs">Log</button><button data-act="delete">Delete</button></td></tr>`).join("");
    } catch (e) { this.$(".agents-note").textContent = e.message; }
  }

  edit(name, source, suggested = "") {
    this.$(".agents-edit").hidden = false;
    this.$(".agents-name").value = name || suggested;
    this.$(".agents-name").disabled = Boolean(name);
    this.isNew = !name;
    this.$(".agents-source").value = source;
    this.$(".agents-problem").textContent = "";
  }

  async click(ev) {
    const btn = ev.target.closest("button");
    if (!btn) return;
    const name = btn.closest("tr")?.dataset.name;
    const act = btn.dataset.act;
    try {
      if (act === "refresh") await this.refresh();
      else if (act === "new") this.edit("", TEMPLATE);
      else if (act === "cancel") this.$(".agents-edit").hidden = true;
      else if (act === "describe") this.ask("draft");
      else if (act === "improve") this.ask("improve", name);
      else if (act === "propose" || act === "retry") await this.propose();
      else if (act === "approve") await this.approve();
      else if (act === "discard" || act === "close-ask") this.discard();
      else if (act === "edit") { const a = await getJSON(`/api/agents/${encodeURIComponent(name)}`); this.edit(a.name, a.source); }
      else if (act === "save") await this.save();
      else if (act === "enable" || act === "disable") { await send("POST", `/api/agents/${encodeURIComponent(name)}/${act}`); await this.refresh(); }
      else if (act === "delete") { if (window.confirm(`Delete agent ${name}?`)) { await send("DELETE", `/api/agents/${encodeURIComponent(name)}`); await this.refresh(); } }
      else if (act === "logs") this.follow(name);
    } catch (e) { this.$(".agents-note").textContent = e.message; }
  }

  async save() {
    const name = this.$(".agents-name").value.trim();
    const source = this.$(".agents-source").value;
    try {
      // A new agent (a draft, a template) is stored only if no agent has that name yet.
      await send("PUT", `/api/agents/${encodeURIComponent(name)}`, this.isNew ? { source, base_revision: 0 } : { source });
      this.$(".agents-edit").hidden = true;
      if (this.proposal && this.proposal.kind === "draft") this.discard();
      await this.refresh();
    } catch (e) {
      const b = e.body || {};
      this.$(".agents-problem").textContent = b.line ? `line ${b.line}${b.column ? ", column " + b.column : ""}: ${b.error}` : e.message;
    }
  }

  follow(name) {
    if (this.socket) this.socket.close();
    const log = this.$(".agents-log");
    const title = this.$(".agents-log-title");
    log.hidden = false; title.hidden = false;
    title.textContent = `Log of ${name}`;
    log.textContent = "";
    const token = localStorage.getItem("wiretide.token") || "";
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/agents/${encodeURIComponent(name)}/logs/stream${token ? "?token=" + encodeURIComponent(token) : ""}`;
    this.socket = new WebSocket(url);
    const writers = new Set();  // once two replicas have written, every line names its replica
    this.socket.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.replica) writers.add(msg.replica);
      const who = writers.size > 1 && msg.replica ? `${msg.replica}: ` : "";
      const text = msg.type === "line" ? `${who}${msg.stream === "log" ? "" : "[" + msg.stream + "] "}${msg.text}` : `[error] ${msg.error}`;
      const lines = (log.textContent ? log.textContent.split("\n") : []).concat(text).slice(-LOG_LINES);
      log.textContent = lines.join("\n");
      log.scrollTop = log.scrollHeight;
    };
  }
}

// Each replica of the agents service runs its own copy of an agent: with several, show each one's state.
function replicaStates(a) {
  const rs = a.replicas || [];
  if (rs.length < 2) return "";
  return `<div class="muted agents-replicas">${rs.map((r) => `${esc(r.replica)}: ${esc(r.stale ? "stale" : r.state)}${r.error_line ? " (line " + r.error_line + ")" : ""}`).join(" · ")}</div>`;
}

const root = document.getElementById("agents");
export const agentsPanel = root ? new AgentsPanel(root) : null;
