// The sandbox's own JavaScript, evaluated before any helper and before the agent's source.
//
// JavaScript cannot call into Python while a time limit is set, so every helper call is recorded
// in an outbox that the host drains after each call into the sandbox; answers to asynchronous
// helpers come back through __wt_settle. Names starting with __wt_ belong to the sandbox.
var __wt_out = [];
var __wt_pending = new Map();
var __wt_seq = 0;
var __wt_hooks = {};
var __wt_cur = null;   // the entry the current hook call was handed (kfl.match)
var __wt_kres = null;  // kfl.match results for that entry, by query index
var __wt_kq = {};      // query text -> index, for the queries known when the agent loaded
var __wt_logs = 0;     // console lines in this call (bounded)
var __wt_log_dropped = 0;
var __wt_max_logs = 1000;
var __wt_metrics = new Map();
var __wt_line_offset = 0;

function __wt_emit(rec) {
  __wt_out.push(rec);
}

// The line of the agent's source that called a helper (for errors reported later by the host).
function __wt_line() {
  var stack = new Error().stack || "";
  var re = /<input>:(\d+)/g, m;
  while ((m = re.exec(stack)) !== null) {
    var n = Number(m[1]);
    if (n < __wt_line_offset) return n;
  }
  return 0;
}

function __wt_type(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  return typeof v;
}

// Throw a TypeError naming the helper's signature when an argument has the wrong type.
function __wt_check(sig, name, value, types) {
  var t = __wt_type(value);
  if (types.indexOf(t) < 0) {
    throw new TypeError(sig + ": " + name + " must be " + types.join(" or ") + ", got " + t);
  }
}

// An asynchronous helper: the host does the work off the hook path and settles the promise; the
// optional callback gets (result, error).
function __wt_async(kind, args, cb) {
  if (cb !== undefined && typeof cb !== "function") {
    throw new TypeError(kind + ": the callback must be a function, got " + __wt_type(cb));
  }
  var id = ++__wt_seq;
  var p = new Promise(function (resolve, reject) {
    __wt_pending.set(id, { resolve: resolve, reject: reject });
  });
  if (cb !== undefined) {
    p = p.then(function (v) { cb(v, null); }, function (e) { cb(null, e); });
  } else {
    p.catch(function () {}); // an ignored failure is not an unhandled rejection
  }
  __wt_emit([kind, id].concat(args));
  return p;
}

function __wt_settle(id, ok, json) {
  var p = __wt_pending.get(id);
  if (p === undefined) return __wt_drain();
  __wt_pending.delete(id);
  var value = json === null ? null : JSON.parse(json);
  if (ok) p.resolve(value); else p.reject(new Error(String(value)));
  return __wt_drain();
}

function __wt_drain() {
  if (__wt_metrics.size > 0) {
    __wt_out.push(["prometheus", Array.from(__wt_metrics.values())]);
    __wt_metrics.clear();
  }
  if (__wt_log_dropped > 0) {
    __wt_out.push(["console.dropped", __wt_log_dropped]);
    __wt_log_dropped = 0;
  }
  __wt_logs = 0;
  if (__wt_out.length === 0) return null;
  var s = JSON.stringify(__wt_out);
  __wt_out = [];
  return s;
}

function __wt_bind(names) {
  if (typeof names === "string") names = JSON.parse(names);
  for (var i = 0; i < names.length; i++) {
    var f;
    try { f = (0, eval)(names[i]); } catch (e) { f = undefined; }
    if (typeof f === "function") __wt_hooks[names[i]] = f;
  }
  return JSON.stringify(Object.keys(__wt_hooks));
}

// One call from the host: the hook for every item of the batch (a JSON array); `kfl` holds the
// kfl.match results per item (or null); `spread` items are argument lists.
function __wt_run(hook, payload, kfl, spread) {
  var fn = __wt_hooks[hook];
  if (fn !== undefined) {
    var items = JSON.parse(payload);
    var k = kfl === null ? null : JSON.parse(kfl);
    try {
      for (var i = 0; i < items.length; i++) {
        __wt_cur = items[i];
        __wt_kres = k === null ? null : k[i];
        if (spread) fn.apply(null, items[i]); else fn(items[i]);
      }
    } finally {
      __wt_cur = null;
      __wt_kres = null;
    }
  }
  return __wt_drain();
}

function __wt_fmt(args) {
  var parts = [];
  for (var i = 0; i < args.length; i++) {
    var a = args[i];
    if (typeof a === "string") parts.push(a);
    else {
      try { parts.push(JSON.stringify(a)); } catch (e) { parts.push(String(a)); }
    }
  }
  return parts.join(" ");
}
