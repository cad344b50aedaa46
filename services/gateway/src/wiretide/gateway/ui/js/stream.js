// The live WebSocket: reconnects with backoff after a drop and says so; never silently stalls.
import { streamURL } from "./api.js";

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];

export class LiveStream {
  constructor({ onEntry, onState, onError }) {
    this.onEntry = onEntry; this.onState = onState; this.onError = onError;
    this.ws = null; this.query = ""; this.attempt = 0; this.timer = null; this.closedByUs = false;
  }

  open(query) {
    this.query = query; this.attempt = 0; this.close(); this.closedByUs = false; this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    const ws = new WebSocket(streamURL(this.query));
    this.ws = ws;
    this.onState({ state: "connecting" });
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return; // a socket being replaced: its last messages belong to the old query
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (msg.type === "entry") this.onEntry(msg.entry);
      else if (msg.type === "hello") { this.attempt = 0; this.onState({ state: "live" }); }
      else if (msg.type === "error") { this.closedByUs = true; this.onError(msg); }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws || this.closedByUs) return;
      if (ev.code === 4400 || ev.code === 4401) { this.onState({ state: "stopped", reason: ev.reason || "refused" }); return; }
      const wait = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
      this.attempt += 1;
      const why = ev.reason || (ev.code === 4408 ? "fell behind" : "connection lost");
      this.onState({ state: "reconnecting", reason: why, inMs: wait });
      this.timer = setTimeout(() => this.connect(), wait);
    };
  }

  close() {
    this.closedByUs = true;
    clearTimeout(this.timer);
    if (this.ws) { try { this.ws.close(); } catch { /* already closed */ } }
    this.ws = null;
  }
}
