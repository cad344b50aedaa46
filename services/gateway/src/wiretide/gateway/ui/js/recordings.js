// The Recordings tab: recording jobs (/api/recordings) — list them with their runs, start one in a
// dialog (scheduled, repeated daily, or armed with a trigger; uploaded to S3 or GCS), stop or delete
// one, download a run's bundle, and open a recording's entries in the traffic view (record("name")).
// The gateway checks every job; its refusal is shown in the dialog as it says it.
import { ApiError, getJSON, headers, postJSON } from "./api.js";
import { bytes, esc, kflString } from "./format.js";

const REFRESH_MS = 2000; // the list is read again this often while the tab is shown
const list = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);
const when = (ns) => (ns ? new Date(ns / 1e6).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "—");
const span = (s) => (s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`
  : `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, "0")}s`);

function token() { return (headers().authorization || "").replace(/^Bearer /, ""); }
function bundleURL(job, run) {
  const url = `/api/recordings/${encodeURIComponent(job)}/runs/${encodeURIComponent(run)}/bundle`;
  return token() ? `${url}?token=${encodeURIComponent(token())}` : url;
}

export class RecordingsPanel {
  constructor(el, { onOpen } = {}) {
    this.el = el;
    this.onOpen = onOpen || (() => {});
    this.timer = null;
    this.render();
  }

  render() {
    this.el.innerHTML = `
      <div class="toolbar">
        <button id="rec-new" class="primary" title="Start, schedule or arm a recording">New recording…</button>
        <span id="rec-note" class="muted" aria-live="polite"></span>
        <span class="spacer"></span>
        <span id="rec-status" class="muted"></span>
      </div>
      <div id="rec-list" class="recordings-list"></div>
      <dialog id="rec-dialog" class="rec-dialog" aria-label="New recording">
        <form id="rec-form" method="dialog">
          <h3>New recording</h3>
          <label>Name <input id="rec-name" required pattern="[A-Za-z0-9][A-Za-z0-9._\\-]{0,62}" spellcheck="false"
            placeholder="checkout-5xx" aria-label="Name"></label>
          <label>Filter (KFL; empty: every entry) <input id="rec-filter" spellcheck="false"
            placeholder='http &amp;&amp; status_code >= 500' aria-label="Filter"></label>
          <div class="rec-row">
            <label>Start <input id="rec-start" type="datetime-local" aria-label="Start" title="empty: now (UTC)"></label>
            <label>Duration, minutes <input id="rec-duration" type="number" min="0.1" max="1440" step="any" value="10" aria-label="Duration"></label>
            <label>Daily runs <input id="rec-repeat" type="number" min="0" value="1" aria-label="Daily runs" title="0: every day, forever"></label>
            <label>Preceding, minutes <input id="rec-preceding" type="number" min="0" max="60" step="any" value="0" aria-label="Preceding" title="also take this long before each run from the capture ring"></label>
          </div>
          <div class="rec-row">
            <label>Namespaces <input id="rec-namespaces" spellcheck="false" placeholder="shop, payments" aria-label="Namespaces"></label>
            <label>Nodes <input id="rec-nodes" spellcheck="false" placeholder="all" aria-label="Nodes"></label>
            <label>Expiry <input id="rec-expiry" type="datetime-local" aria-label="Expiry" title="no run starts after it (UTC)"></label>
          </div>
          <fieldset><legend>Trigger (instead of a schedule)</legend>
            <label>When <input id="rec-trigger" spellcheck="false" placeholder="http &amp;&amp; status_code >= 500" aria-label="Trigger"></label>
            <label>more than <input id="rec-threshold" type="number" min="0" value="10" aria-label="Threshold"></label>
            <label>per seconds <input id="rec-per" type="number" min="1" max="3600" value="60" aria-label="Per seconds"></label>
          </fieldset>
          <fieldset><legend>Upload (optional)</legend>
            <label>To <input id="rec-upload" spellcheck="false" placeholder="s3://bucket/prefix or gs://bucket/prefix" aria-label="Upload"></label>
            <label>Endpoint <input id="rec-endpoint" spellcheck="false" placeholder="(the provider's)" aria-label="Endpoint"></label>
            <label>Retention, days <input id="rec-retention" type="number" min="0" value="0" aria-label="Retention days"></label>
            <label>Mode <select id="rec-mode" aria-label="Retention mode"><option>GOVERNANCE</option><option>COMPLIANCE</option></select></label>
            <label><input id="rec-hold" type="checkbox" aria-label="Legal hold"> legal hold</label>
          </fieldset>
          <div id="rec-error" class="bad" role="alert" hidden></div>
          <div class="rec-buttons">
            <button id="rec-cancel" type="button">Cancel</button>
            <button id="rec-start-btn" class="primary" type="submit">Start</button>
          </div>
        </form>
      </dialog>`;
    const dialog = this.el.querySelector("#rec-dialog");
    this.el.querySelector("#rec-new").onclick = () => {
      this.el.querySelector("#rec-error").hidden = true;
      dialog.showModal();
      this.el.querySelector("#rec-name").focus();
    };
    this.el.querySelector("#rec-cancel").onclick = () => dialog.close();
    this.el.querySelector("#rec-form").onsubmit = (ev) => { ev.preventDefault(); this.start(); };
    this.el.querySelector("#rec-list").onclick = (ev) => this.act(ev);
  }

  show() {
    this.refresh();
    clearInterval(this.timer);
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  hide() { clearInterval(this.timer); this.timer = null; }

  async refresh() {
    const note = this.el.querySelector("#rec-note");
    try {
      const doc = await getJSON("/api/recordings");
      this.draw(doc);
      note.textContent = "";
    } catch (e) {
      note.textContent = e instanceof ApiError ? e.message : String(e);
    }
  }

  draw(doc) {
    const jobs = doc.recordings || [];
    const status = doc.status || {};
    const drops = Object.entries(status.drops || {}).map(([k, v]) => `${k} ${v}`).join(", ");
    this.el.querySelector("#rec-status").textContent =
      `${bytes(status.used_bytes || 0)} of ${bytes(status.limit_bytes || 0)} used` +
      (drops ? `; drops: ${drops}` : "") + (status.jobs_run_by ? `; run by ${status.jobs_run_by}` : "");
    const runHead = `<tr class="rec-run rec-run-head"><td></td><td>Run</td><td>State</td><td>From</td>
      <td class="num">Entries</td><td class="num">Packets</td><td>Uploads, drops, errors</td><td></td></tr>`;
    const runRows = (j, runs = j.runs || []) => (runs.length ? runHead : "") + runs.map((r) => {
      const packets = Object.values(r.packets || {}).reduce((a, b) => a + b, 0);
      const uploads = Object.entries(r.uploads || {}).map(([k, u]) => `${esc(k)}: ${esc(u.state)}`).join(", ");
      const rdrops = Object.entries(r.drops || {}).map(([k, v]) => `${esc(k)} ${v}`).join(", ");
      const errors = (r.errors || []).slice(-2).map((e) => `<div class="bad">${esc(e)}</div>`).join("");
      const get = r.bundle ? `<a class="rec-download" href="${bundleURL(j.name, r.id)}" download="${esc(r.bundle)}">Download</a>` : "";
      return `<tr class="rec-run" data-run="${esc(r.id)}"><td></td><td>${esc(r.id)}</td><td>${esc(r.state)}</td>
        <td>${when(r.start_ns)}</td><td class="num rec-entries">${r.entries}</td><td class="num">${packets}</td>
        <td>${uploads}${uploads && rdrops ? "; " : ""}${rdrops}${errors}</td><td>${get}</td></tr>`;
    }).join("");
    const rows = jobs.map((j) => {
      const trig = j.trigger ? ` <span class="muted">[trigger: ${esc(j.trigger.condition)} &gt; ${j.trigger.threshold} per ${span(j.trigger.window_s)}; fired ${j.trigger_fired}×]</span>` : "";
      const stop = ["stopped", "finished"].includes(j.state) ? "" : `<button data-act="stop">Stop</button>`;
      return `<tbody data-job="${esc(j.name)}"><tr class="rec-job">
        <td><b>${esc(j.name)}</b></td><td><code>${esc(j.filter || "(all)")}</code>${trig}</td><td class="rec-state">${esc(j.state)}</td>
        <td>${when(j.next_start_ns || j.start_ns || j.created_ns)}</td><td>${span(j.duration_s)}</td>
        <td class="muted">${esc((j.namespaces || []).join(", ") || "all namespaces")}</td>
        <td class="muted">${j.upload ? esc(`${j.upload.kind}://${j.upload.bucket}/${j.upload.prefix}`) : ""}</td>
        <td>${stop}<button data-act="open" title="Show its entries: record(&quot;${esc(j.name)}&quot;)">Entries</button>
          <button data-act="delete">Delete</button></td></tr>${runRows(j)}</tbody>`;
    }).join("");
    this.el.querySelector("#rec-list").innerHTML = jobs.length
      ? `<table class="grid recordings"><thead><tr><th>Name</th><th>Filter</th><th>State</th><th>Next / last start</th>
          <th>Duration</th><th>Scope</th><th>Upload</th><th></th></tr></thead>${rows}</table>`
      : `<p class="muted">No recording jobs. <b>New recording…</b> keeps the entries matching a filter, the
          packets of their flows and who held which address, as one bundle per run
          (<code>wiretide analyze BUNDLE</code> opens it offline).</p>`;
    // Runs whose job is gone (finished and removed, deleted, or imported bundles): still downloadable.
    const orphans = doc.runs || [];
    this.el.querySelector("#rec-list").innerHTML += orphans.length
      ? `<h4>Runs without a job</h4><table class="grid recordings rec-orphans">${
        orphans.map((r) => `<tbody data-job="${esc(r.job)}">${runRows({ name: r.job }, [r])}</tbody>`).join("")}</table>`
      : "";
  }

  job() {
    const v = (id) => this.el.querySelector(`#${id}`).value.trim();
    const ns = (id) => { const t = v(id); return t ? Date.parse(t + "Z") * 1e6 : 0; };
    const doc = {
      name: v("rec-name"), filter: v("rec-filter"), start_ns: ns("rec-start"), expiry_ns: ns("rec-expiry"),
      duration_s: Number(v("rec-duration")) * 60, repetitions: Number(v("rec-repeat")),
      preceding_s: Number(v("rec-preceding")) * 60, namespaces: list(v("rec-namespaces")), nodes: list(v("rec-nodes")),
    };
    if (v("rec-trigger")) doc.trigger = { condition: v("rec-trigger"), threshold: Number(v("rec-threshold")), window_s: Number(v("rec-per")) };
    const upload = v("rec-upload").match(/^(s3|gs):\/\/([^/]+)\/?(.*)$/);
    if (v("rec-upload") && !upload) throw new Error("Upload: write s3://BUCKET[/PREFIX] or gs://BUCKET[/PREFIX]");
    if (upload) {
      doc.upload = { kind: upload[1] === "gs" ? "gcs" : "s3", bucket: upload[2], prefix: upload[3], endpoint: v("rec-endpoint"),
        retention_days: Number(v("rec-retention")), retention_mode: v("rec-mode"), legal_hold: this.el.querySelector("#rec-hold").checked };
    }
    return doc;
  }

  async start() {
    const error = this.el.querySelector("#rec-error");
    try {
      const made = await postJSON("/api/recordings", this.job());
      this.el.querySelector("#rec-dialog").close();
      this.el.querySelector("#rec-note").textContent = `${made.name}: ${made.state}`;
      this.refresh();
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    }
  }

  async act(ev) {
    const button = ev.target.closest("button[data-act]");
    if (!button) return;
    const name = button.closest("tbody").dataset.job;
    const act = button.dataset.act;
    if (act === "open") { this.onOpen(`record(${kflString(name)})`); return; }
    if (act === "delete" && !window.confirm(`Delete the recording job ${name}? Its bundles stay on the node.`)) return;
    const path = `/api/recordings/${encodeURIComponent(name)}${act === "stop" ? "/stop" : ""}`;
    const resp = await fetch(path, { method: act === "stop" ? "POST" : "DELETE", headers: headers() });
    const body = await resp.json().catch(() => null);
    this.el.querySelector("#rec-note").textContent = resp.ok
      ? `${name}: ${act === "stop" ? "stopped" : "deleted"}` : (body && body.error) || `HTTP ${resp.status}`;
    this.refresh();
  }
}
