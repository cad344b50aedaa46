// The KFL filter bar: validated as you type (the error position shown under the query), variables
// autocompleted, past queries remembered, and the applied query kept in the URL to share it.
import { getJSON, postJSON } from "./api.js";
import { esc } from "./format.js";

const HISTORY_KEY = "wiretide.history";
const HISTORY_MAX = 30;
const VALIDATE_DELAY_MS = 200;

export class FilterBar {
  constructor({ input, error, suggest, historyList, historyBtn, applyBtn, onApply }) {
    Object.assign(this, { input, error, suggest, historyList, onApply });
    this.variables = [];
    this.timer = null;
    this.active = -1;
    this.valid = true;
    getJSON("/api/kfl/variables").then((v) => { this.variables = v.variables || []; }).catch(() => {});
    input.value = new URLSearchParams(location.search).get("q") || "";
    input.addEventListener("input", () => { this.scheduleValidate(); this.autocomplete(); });
    input.addEventListener("keydown", (ev) => this.keydown(ev));
    input.addEventListener("blur", () => setTimeout(() => { this.suggest.hidden = true; }, 150));
    applyBtn.addEventListener("click", () => this.apply());
    historyBtn.addEventListener("click", () => this.toggleHistory());
    suggest.addEventListener("mousedown", (ev) => { const li = ev.target.closest("li"); if (li) { ev.preventDefault(); this.complete(li.dataset.name); } });
    historyList.addEventListener("mousedown", (ev) => {
      const li = ev.target.closest("li");
      if (li) { ev.preventDefault(); this.input.value = li.dataset.q; this.historyList.hidden = true; this.apply(); }
    });
    if (input.value) this.scheduleValidate();
  }

  get query() { return this.input.value.trim(); }

  scheduleValidate() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.validate(), VALIDATE_DELAY_MS);
  }

  async validate() {
    const q = this.query;
    if (!q) { this.showValid(true); return true; }
    try {
      const res = await postJSON("/api/kfl/validate", { query: q });
      const problems = res.problems || [];
      const err = problems.find((p) => p.severity === "error");
      const warning = problems.find((p) => p.severity !== "error");
      if (err) this.showError(q, err);
      else if (warning) this.showWarning(q, warning);
      else this.showValid(true);
      return res.valid;
    } catch (e) {
      this.showError(q, { message: e.message, position: e.body?.position ?? 0, hint: e.body?.hint || "" });
      return false;
    }
  }

  showValid(ok) {
    this.valid = ok;
    this.input.classList.toggle("invalid", !ok);
    this.input.classList.toggle("valid", ok && !!this.query);
    this.error.hidden = true;
  }

  showError(q, p) {
    this.valid = false;
    this.input.classList.add("invalid");
    this.input.classList.remove("valid");
    this.point(q, p, false);
  }

  // A query that runs as written but was translated (a Wireshark field, `50ms`, `=~`): it stays
  // applicable, and the canonical spelling is shown under it.
  showWarning(q, p) {
    this.showValid(true);
    this.point(q, p, true);
  }

  point(q, p, warning) {
    const pos = Math.max(0, Math.min(p.position ?? 0, q.length));
    this.error.classList.toggle("warning", warning);
    this.error.innerHTML = `${esc(q)}\n${" ".repeat(pos)}<span class="caret">^</span> ${esc(p.message)}${p.hint ? `\n${esc(p.hint)}` : ""}`;
    this.error.hidden = false;
  }

  currentWord() {
    const upto = this.input.value.slice(0, this.input.selectionStart);
    const m = upto.match(/[A-Za-z_][A-Za-z0-9_.]*$/);
    return m ? m[0] : "";
  }

  autocomplete() {
    const word = this.currentWord();
    if (word.length < 1 || !this.variables.length) { this.suggest.hidden = true; return; }
    const hits = this.variables.filter((v) => v.name.startsWith(word) && v.name !== word).slice(0, 12);
    if (!hits.length) { this.suggest.hidden = true; return; }
    this.active = 0;
    this.suggest.innerHTML = hits.map((v, i) => `<li data-name="${esc(v.name)}" class="${i === 0 ? "active" : ""}">${esc(v.name)}<small>${esc(v.description || v.kind || "")}</small></li>`).join("");
    this.suggest.hidden = false;
  }

  complete(name) {
    const pos = this.input.selectionStart;
    const before = this.input.value.slice(0, pos).replace(/[A-Za-z_][A-Za-z0-9_.]*$/, "");
    this.input.value = before + name + this.input.value.slice(pos);
    const caret = before.length + name.length;
    this.input.setSelectionRange(caret, caret);
    this.suggest.hidden = true;
    this.scheduleValidate();
  }

  keydown(ev) {
    const items = [...this.suggest.querySelectorAll("li")];
    if (!this.suggest.hidden && items.length) {
      if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        ev.preventDefault();
        this.active = (this.active + (ev.key === "ArrowDown" ? 1 : -1) + items.length) % items.length;
        items.forEach((li, i) => li.classList.toggle("active", i === this.active));
        return;
      }
      if (ev.key === "Tab") { ev.preventDefault(); this.complete(items[Math.max(0, this.active)].dataset.name); return; }
    }
    if (ev.key === "Enter") { ev.preventDefault(); this.suggest.hidden = true; this.apply(); }
    if (ev.key === "Escape") { this.suggest.hidden = true; this.input.blur(); }
  }

  async apply() {
    const q = this.query;
    if (q && !(await this.validate())) return;
    const url = new URL(location.href);
    if (q) url.searchParams.set("q", q); else url.searchParams.delete("q");
    history.replaceState(null, "", url);
    if (q) this.remember(q);
    this.onApply(q);
  }

  append(clause) {
    const q = this.query;
    this.input.value = q ? `${q} && ${clause}` : clause;
    this.apply();
  }

  remember(q) {
    const list = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]").filter((x) => x !== q);
    list.unshift(q);
    localStorage.setItem(HISTORY_KEY, JSON.stringify(list.slice(0, HISTORY_MAX)));
  }

  toggleHistory() {
    const list = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
    this.historyList.innerHTML = list.length ? list.map((q) => `<li data-q="${esc(q)}">${esc(q)}</li>`).join("") : "<li class=muted>no history yet</li>";
    this.historyList.hidden = !this.historyList.hidden;
  }
}
