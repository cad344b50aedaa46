// The agent console: a chat panel over POST /api/console. The answer streams as server-sent events,
// read from fetch (EventSource can neither POST nor send the token); the tools the model calls show
// as they run, and the entries the answer cites become links that open the entry's detail pane.
import { getJSON, headers } from "./api.js";
import { esc } from "./format.js";

const MAX_HISTORY = 20; // earlier messages sent with a follow-up (the gateway keeps at most this many)
const ENTRY_HASH = /^#entry=([A-Za-z0-9_-]{1,64})$/;

// Server-sent events from a fetch body: calls onEvent(name, data) for each complete event.
async function readEvents(resp, onEvent) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
      let name = "message"; const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trim());
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

// The answer's text with its citations as links (only ids a tool returned); the rest escaped.
export function renderAnswer(text, citations = [], unverified = []) {
  const linked = new Set(citations.map((c) => c.id)), doubtful = new Set(unverified);
  return esc(text).replace(/\[entry:\s*([A-Za-z0-9_-]{1,64})\s*\]/g, (m, id) => {
    if (linked.has(id)) return `<a class="cite" href="#entry=${id}" title="open entry ${id}">${id.slice(-8)}</a>`;
    if (doubtful.has(id)) return `<span class="cite unverified" title="no tool returned this entry">${id.slice(-8)}?</span>`;
    return m;
  }).replace(/\n/g, "<br>");
}

export class ConsolePanel {
  constructor({ log, form, input, note }) {
    Object.assign(this, { log, form, input, note, history: [], busy: false });
    form.addEventListener("submit", (ev) => { ev.preventDefault(); this.ask(input.value.trim()); });
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); this.ask(input.value.trim()); }
    });
  }

  async refresh() {
    try {
      const info = await getJSON("/api/console");
      this.enabled = info.llm.enabled;
      this.note.textContent = info.llm.enabled
        ? `model ${info.llm.model} · tools: ${info.tools.map((t) => t.name).join(", ")}`
        : info.llm.message;
      this.note.classList.toggle("s5", !info.llm.enabled);
      this.input.disabled = !info.llm.enabled;
    } catch (e) { this.note.textContent = e.message; }
  }

  bubble(cls, html) {
    const div = document.createElement("div");
    div.className = `msg ${cls}`; div.innerHTML = html;
    this.log.appendChild(div); this.log.scrollTop = this.log.scrollHeight;
    return div;
  }

  async ask(question) {
    if (!question || this.busy) return;
    this.busy = true; this.input.value = "";
    this.bubble("user", esc(question));
    const steps = this.bubble("steps", ""), answer = this.bubble("assistant", "");
    let text = "";
    try {
      const resp = await fetch("/api/console", {
        method: "POST",
        headers: headers({ "content-type": "application/json", accept: "text/event-stream" }),
        body: JSON.stringify({ question, history: this.history.slice(-MAX_HISTORY) }),
      });
      if (!resp.ok) {
        const body = await resp.json().catch(() => ({}));
        throw new Error(body.error || `HTTP ${resp.status}`);
      }
      await readEvents(resp, (name, data) => {
        if (name === "text") { text += data.text; answer.textContent = text; }
        else if (name === "tool") steps.insertAdjacentHTML("beforeend", `<div>→ <b>${esc(data.name)}</b> <code>${esc(data.arguments)}</code></div>`);
        else if (name === "tool_result" && !data.ok) steps.insertAdjacentHTML("beforeend", `<div class="s5">${esc(data.name)} answered an error</div>`);
        else if (name === "error") answer.insertAdjacentHTML("beforeend", `<div class="s5">${esc(data.error)}</div>`);
        else if (name === "done") {
          answer.innerHTML = renderAnswer(data.answer, data.citations, data.unverified_citations);
          if (data.stopped) answer.insertAdjacentHTML("beforeend", `<div class="muted">(${esc(data.stopped)})</div>`);
          this.history.push({ role: "user", content: question }, { role: "assistant", content: data.answer });
        }
        this.log.scrollTop = this.log.scrollHeight;
      });
    } catch (e) {
      answer.insertAdjacentHTML("beforeend", `<div class="s5">${esc(e.message)}</div>`);
    } finally { this.busy = false; }
  }
}

// Entry links (#entry=ID, from the console or pasted): open the entry wherever the page is.
export function watchEntryLinks(open) {
  const check = () => {
    const m = ENTRY_HASH.exec(location.hash);
    if (!m) return;
    history.replaceState(null, "", location.pathname + location.search); // the same link opens again
    open(m[1]);
  };
  window.addEventListener("hashchange", check);
  check();
}
