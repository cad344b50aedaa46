// The gateway's REST/WS API as the UI uses it. The one place that knows URLs and the auth token.
const params = new URLSearchParams(location.search);
if (params.get("token")) localStorage.setItem("wiretide.token", params.get("token"));
const token = () => localStorage.getItem("wiretide.token") || "";

export function headers(extra = {}) {
  const h = { ...extra };
  if (token()) h.authorization = `Bearer ${token()}`;
  return h;
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

// A 401 asks the user for a token once (kept in this browser's storage for this origin), then reloads.
let asked = false;
function login(status) {
  if (status !== 401 || asked) return;
  asked = true;
  const t = window.prompt("This Wiretide needs an access token (see docs/security.md):");
  if (t) { localStorage.setItem("wiretide.token", t.trim()); location.reload(); }
}

export async function getJSON(path, query = {}) {
  const qs = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined && v !== null && v !== ""));
  const resp = await fetch(`${path}${qs.toString() ? "?" + qs : ""}`, { headers: headers() });
  let body = null;
  try { body = await resp.json(); } catch { body = null; }
  if (!resp.ok) { login(resp.status); throw new ApiError(resp.status, body); }
  return body;
}

export async function postJSON(path, doc) {
  const resp = await fetch(path, { method: "POST", headers: headers({ "content-type": "application/json" }), body: JSON.stringify(doc) });
  const body = await resp.json().catch(() => null);
  if (!resp.ok) throw new ApiError(resp.status, body);
  return body;
}

export function streamURL(query) {
  const qs = new URLSearchParams({ q: query });
  if (token()) qs.set("token", token());
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/stream?${qs}`;
}

export function pcapURL(id) {
  return `/api/entries/${encodeURIComponent(id)}/pcap${token() ? "?token=" + encodeURIComponent(token()) : ""}`;
}
