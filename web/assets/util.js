// Helpers shared by the dashboard's views: REST calls with relative URLs (the dashboard may sit
// behind YARN's web proxy under a path prefix), escaping and number formatting.

/** GET a JSON document of the REST API, e.g. `v1/overview`; throws with the server's message. */
export async function getJson(path) {
  const res = await fetch(path, { headers: { Accept: 'application/json' }, cache: 'no-store' });
  return parse(res, path);
}

/** POST or PATCH (the only methods that change anything) with a JSON body. */
export async function send(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return parse(res, path);
}

async function parse(res, path) {
  const text = await res.text();
  let doc = null;
  try {
    doc = text ? JSON.parse(text) : {};
  } catch {
    doc = null;
  }
  if (!res.ok) {
    let msg = doc && Array.isArray(doc.errors) ? doc.errors.join('; ') : `${res.status} ${res.statusText}`;
    if (res.status === 405 && behindYarnProxy()) {
      msg = 'the YARN web proxy forwards only GET and PUT requests: open the dashboard at the ' +
        "master's own address (Master-Address in `yarn-submit --status <application-id>`) to act on the job";
    }
    const err = new Error(`${path}: ${msg}`);
    err.status = res.status;
    throw err;
  }
  if (doc === null) throw new Error(`${path}: not a JSON document`);
  return doc;
}

/** Whether the page came through YARN's web proxy (`.../proxy/application_<id>/`). */
export function behindYarnProxy() {
  return /\/proxy\/application_\d+_\d+\//.test(window.location.pathname);
}

const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
/** Text made safe for innerHTML (names and messages come from user code). */
export function esc(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ESC[c]);
}

export function fmtTime(ms) {
  if (ms === null || ms === undefined || ms < 0) return '–';
  const d = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined || ms < 0) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${Math.floor(s % 60)}s`;
  const h = Math.floor(m / 60);
  return h < 24 ? `${h}h ${m % 60}m` : `${Math.floor(h / 24)}d ${h % 24}h`;
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export function fmtCount(n) {
  if (n === null || n === undefined) return '–';
  const v = Number(n);
  if (v < 1e4) return String(v);
  if (v < 1e6) return `${(v / 1e3).toFixed(1)}K`;
  if (v < 1e9) return `${(v / 1e6).toFixed(2)}M`;
  return `${(v / 1e9).toFixed(2)}G`;
}

/** A status badge; the class colours it (RUNNING green, FAILED red, ...). */
export function badge(state) {
  const s = String(state ?? 'UNKNOWN');
  return `<span class="badge st-${esc(s.toLowerCase())}">${esc(s)}</span>`;
}

const TERMINAL = new Set(['FINISHED', 'CANCELED', 'FAILED', 'SUSPENDED']);
export function isTerminal(state) {
  return TERMINAL.has(state);
}
