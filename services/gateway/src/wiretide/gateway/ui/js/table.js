// The virtualised traffic table: only the visible rows exist in the DOM, and rendering is paced to
// animation frames, so thousands of entries per second do not freeze the page.
import { esc, endName, endNs, statusClass, statusText, latency, bytes, clock, kflString } from "./format.js";
import { marks } from "./agents.js";

export const MAX_ENTRIES = 100000; // entries kept in the page; the oldest go first (memory bound)
const OVERSCAN = 10;

export class TrafficTable {
  constructor({ viewport, rows, spacer, onSelect, onFilter }) {
    this.viewport = viewport; this.rowsEl = rows; this.spacer = spacer;
    this.onSelect = onSelect; this.onFilter = onFilter;
    this.entries = []; // oldest first
    this.newestFirst = true;
    this.selectedId = null;
    this.rowH = parseInt(getComputedStyle(document.documentElement).getPropertyValue("--row")) || 24;
    this.dirty = false;
    viewport.addEventListener("scroll", () => this.schedule());
    rows.addEventListener("click", (ev) => this.click(ev));
    new ResizeObserver(() => this.schedule()).observe(viewport);
    marks.onChange(() => this.schedule());
  }

  get length() { return this.entries.length; }
  at(i) { return this.newestFirst ? this.entries[this.entries.length - 1 - i] : this.entries[i]; }
  indexOf(id) {
    const k = this.entries.findIndex((e) => e.id === id);
    return k < 0 ? -1 : this.newestFirst ? this.entries.length - 1 - k : k;
  }

  add(list) {
    for (const e of list) this.entries.push(e);
    const over = this.entries.length - MAX_ENTRIES;
    if (over > 0) this.entries.splice(0, over);
    if (!this.newestFirst && this.followBottom()) this.stickBottom = true;
    this.schedule();
  }

  replace(list) { this.entries = list.slice(-MAX_ENTRIES); this.viewport.scrollTop = 0; this.schedule(); }
  clear() { this.entries = []; this.selectedId = null; this.schedule(); }
  setOrder(newestFirst) { this.newestFirst = newestFirst; this.schedule(); }
  followBottom() { const v = this.viewport; return v.scrollTop + v.clientHeight >= v.scrollHeight - this.rowH * 2; }

  schedule() {
    if (this.dirty) return;
    this.dirty = true;
    requestAnimationFrame(() => { this.dirty = false; this.render(); });
  }

  render() {
    const total = this.entries.length;
    this.spacer.style.height = `${total * this.rowH}px`;
    if (this.stickBottom) { this.viewport.scrollTop = this.viewport.scrollHeight; this.stickBottom = false; }
    const first = Math.max(0, Math.floor(this.viewport.scrollTop / this.rowH) - OVERSCAN);
    const count = Math.ceil(this.viewport.clientHeight / this.rowH) + 2 * OVERSCAN;
    const html = [];
    const shown = [];
    for (let i = first; i < Math.min(total, first + count); i++) { html.push(this.rowHTML(this.at(i), i)); shown.push(this.at(i).id); }
    marks.want(shown); // agents' onItemQueried marks for the rows on screen
    this.rowsEl.style.transform = `translateY(${first * this.rowH}px)`;
    this.rowsEl.innerHTML = html.join("");
  }

  rowHTML(e, i) {
    const sel = e.id === this.selectedId ? " selected" : "";
    const src = e.src || {}, dst = e.dst || {};
    const path = e.path || e.summary || "";
    const size = (e.size?.request || 0) + (e.size?.response || 0);
    const st = statusText(e);
    const dstKfl = dst.name ? `dst.name == ${kflString(dst.name)}` : `dst.ip == ${kflString(dst.ip || "")}`;
    const srcKfl = src.name ? `src.name == ${kflString(src.name)}` : `src.ip == ${kflString(src.ip || "")}`;
    return `<div class="row${sel}" data-i="${i}" data-id="${esc(e.id)}">`
      + `<span>${clock(e.timestamp)}</span>`
      + `<span><span class="badge ${esc(e.protocol)} clickable" data-kfl="${esc(e.protocol === "graphql" ? "gql" : e.protocol)}">${esc(e.protocol)}</span></span>`
      + `<span title="${esc(src.ip || "")}"><span class="clickable" data-kfl="${esc(srcKfl)}">${esc(endName(src))}</span> <span class="ns">${esc(endNs(src))}</span></span>`
      + `<span title="${esc(dst.ip || "")}:${esc(dst.port || "")}"><span class="clickable" data-kfl="${esc(dstKfl)}">${esc(endName(dst))}</span> <span class="ns">${esc(endNs(dst))}</span></span>`
      + `<span>${esc(e.method || "")}</span>`
      + `<span title="${esc(e.summary || path)}"><span class="clickable" data-kfl="${esc(`path == ${kflString(path)}`)}">${esc(path)}</span></span>`
      + `<span class="${statusClass(e)}"><span class="clickable" data-kfl="${esc(typeof e.status === "number" ? `status_code == ${e.status}` : "")}">${esc(st)}</span>${marks.badge(e.id)}</span>`
      + `<span>${latency(e.elapsed_us)}</span><span>${bytes(size)}</span></div>`;
  }

  click(ev) {
    const value = ev.target.closest(".clickable");
    if (value && value.dataset.kfl) { ev.stopPropagation(); this.onFilter(value.dataset.kfl); return; }
    const row = ev.target.closest(".row");
    if (row) this.select(Number(row.dataset.i));
  }

  select(i) {
    if (i < 0 || i >= this.length) return;
    const e = this.at(i);
    this.selectedId = e.id;
    const top = i * this.rowH, v = this.viewport;
    if (top < v.scrollTop) v.scrollTop = top;
    else if (top + this.rowH > v.scrollTop + v.clientHeight) v.scrollTop = top + this.rowH - v.clientHeight;
    this.schedule();
    this.onSelect(e);
  }

  move(delta) {
    const cur = this.selectedId ? this.indexOf(this.selectedId) : -1;
    this.select(Math.max(0, Math.min(this.length - 1, cur + delta)));
  }
}
