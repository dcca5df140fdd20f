// The checkpoint view: counts, a chart of duration and size over trigger time, and the history
// table. Rendered as one HTML string and only when the history changed, so a history of
// thousands of entries costs one DOM write per change, not per poll.

import { esc, fmtBytes, fmtDuration, fmtTime } from './util.js';

/** What identifies a history's content for re-rendering (new entries, acks, status changes). */
export function signature(doc) {
  const h = doc.history || [];
  const head = h.slice(0, 4).map((c) => `${c.id}:${c.status}:${c.num_acknowledged_subtasks}:${c.discarded}`);
  return `${JSON.stringify(doc.counts || {})}|${h.length}|${head.join(',')}`;
}

/** Alignment time of a checkpoint in ms, when the server reports one. */
function alignment(c) {
  const a = c.alignment_duration ?? c.alignment_time;
  return a === undefined || a === null ? null : Number(a);
}

export function renderCounts(doc) {
  const c = doc.counts || {};
  const item = (k, v) => `<div class="stat"><div class="v">${esc(v ?? 0)}</div><div class="k">${k}</div></div>`;
  const latest = (doc.latest || {}).completed;
  const sp = (doc.latest || {}).savepoint;
  return (
    `<div class="stats">${item('triggered', c.total)}${item('in progress', c.in_progress)}` +
    `${item('completed', c.completed)}${item('failed', c.failed)}${item('restored', c.restored)}</div>` +
    `<p class="latest">Latest completed: ${latest ? `#${esc(latest.id)} <code>${esc(latest.external_path || '')}</code>` : '–'}` +
    `<br>Latest savepoint: ${sp ? `#${esc(sp.id)} <code class="latest-savepoint">${esc(sp.external_path || '')}</code>` : '–'}</p>`
  );
}

/** Duration (left axis), size (right axis) and alignment over trigger time, as inline SVG. */
export function renderChart(history, width) {
  const pts = history.filter((c) => c.status !== 'IN_PROGRESS').slice().reverse();
  if (pts.length === 0) return '<p class="muted">No finished checkpoint yet.</p>';
  // Drawn at the container's width so that the labels are not stretched.
  const Wd = Math.max(400, Math.round(width || 900));
  const Ht = 200;
  const L = 60;
  const R = 70;
  const T = 12;
  const B = 26;
  const t0 = pts[0].trigger_timestamp;
  const t1 = Math.max(t0 + 1, pts[pts.length - 1].trigger_timestamp);
  const maxDur = Math.max(1, ...pts.map((c) => Number(c.end_to_end_duration) || 0));
  const maxSize = Math.max(1, ...pts.map((c) => Number(c.checkpointed_size ?? c.state_size) || 0));
  const x = (t) => (L + ((t - t0) / (t1 - t0)) * (Wd - L - R)).toFixed(1);
  const yDur = (d) => (T + (1 - d / maxDur) * (Ht - T - B)).toFixed(1);
  const ySize = (s) => (T + (1 - s / maxSize) * (Ht - T - B)).toFixed(1);
  const line = (f) => pts.map((c) => `${x(c.trigger_timestamp)},${f(c)}`).join(' ');
  const dur = line((c) => yDur(Number(c.end_to_end_duration) || 0));
  const size = line((c) => ySize(Number(c.checkpointed_size ?? c.state_size) || 0));
  const aligned = pts.filter((c) => alignment(c) !== null);
  const align = aligned.length
    ? `<polyline class="s-align" points="${aligned.map((c) => `${x(c.trigger_timestamp)},${yDur(alignment(c))}`).join(' ')}"></polyline>`
    : '';
  const failed = pts
    .filter((c) => c.status === 'FAILED')
    .map((c) => `<circle class="s-failed" cx="${x(c.trigger_timestamp)}" cy="${yDur(Number(c.end_to_end_duration) || 0)}" r="3.5"><title>#${esc(c.id)} failed</title></circle>`)
    .join('');
  return (
    `<svg class="chart" width="${Wd}" height="${Ht}" viewBox="0 0 ${Wd} ${Ht}" role="img" aria-label="checkpoint duration and size over time">` +
    `<line class="axis" x1="${L}" y1="${Ht - B}" x2="${Wd - R}" y2="${Ht - B}"></line>` +
    `<line class="axis" x1="${L}" y1="${T}" x2="${L}" y2="${Ht - B}"></line>` +
    `<line class="axis" x1="${Wd - R}" y1="${T}" x2="${Wd - R}" y2="${Ht - B}"></line>` +
    `<text class="lbl" x="${L - 4}" y="${T + 8}" text-anchor="end">${esc(fmtDuration(maxDur))}</text>` +
    `<text class="lbl" x="${L - 4}" y="${Ht - B}" text-anchor="end">0</text>` +
    `<text class="lbl" x="${Wd - R + 4}" y="${T + 8}">${esc(fmtBytes(maxSize))}</text>` +
    `<text class="lbl" x="${L}" y="${Ht - 8}">${esc(fmtTime(t0))}</text>` +
    `<text class="lbl" x="${Wd - R}" y="${Ht - 8}" text-anchor="end">${esc(fmtTime(t1))}</text>` +
    `<polyline class="s-size" points="${size}"></polyline>` +
    `<polyline class="s-dur" points="${dur}"></polyline>${align}${failed}</svg>` +
    `<div class="legend"><span class="k-dur">■ duration</span> <span class="k-size">■ checkpointed size</span>` +
    ` <span class="k-align">■ alignment</span> <span class="k-failed">● failed</span></div>`
  );
}

/** Rows per page of the history table: a page, not the whole history, is laid out. */
export const PAGE_SIZE = 50;

/** Page `page` (0: newest) of the history table, with buttons to page through it. */
export function renderTable(history, page) {
  if (history.length === 0) return '<p class="muted">No checkpoint yet.</p>';
  const pages = Math.max(1, Math.ceil(history.length / PAGE_SIZE));
  const p = Math.min(Math.max(0, page), pages - 1);
  const first = p * PAGE_SIZE;
  const shown = history.slice(first, first + PAGE_SIZE);
  const pager =
    `<div class="pager"><button type="button" data-page="${p - 1}"${p === 0 ? ' disabled' : ''}>‹ newer</button>` +
    ` rows ${first + 1}–${first + shown.length} of <span class="ck-total">${history.length}</span> ` +
    `<button type="button" data-page="${p + 1}"${p >= pages - 1 ? ' disabled' : ''}>older ›</button></div>`;
  const rows = shown.map((c) => {
    const type = c.is_savepoint ? 'savepoint' : 'checkpoint';
    const detail = c.status === 'FAILED' ? esc(c.failure_message || '') : esc(c.external_path || '');
    const a = alignment(c);
    return (
      `<tr class="ckpt st-${esc(String(c.status).toLowerCase())}" data-id="${esc(c.id)}">` +
      `<td>${esc(c.id)}</td><td>${type}</td><td>${esc(c.status)}${c.discarded ? ' (discarded)' : ''}</td>` +
      `<td>${esc(c.num_acknowledged_subtasks)}/${esc(c.num_subtasks)}</td>` +
      `<td>${esc(fmtTime(c.trigger_timestamp))}</td><td>${esc(fmtTime(c.latest_ack_timestamp))}</td>` +
      `<td>${esc(fmtDuration(c.end_to_end_duration))}</td><td>${esc(fmtBytes(c.checkpointed_size ?? c.state_size))}</td>` +
      `<td>${a === null ? '–' : esc(fmtDuration(a))}</td><td class="path">${detail}</td></tr>`
    );
  });
  return (
    '<table class="checkpoints"><thead><tr><th>ID</th><th>Type</th><th>Status</th><th>Acks</th>' +
    '<th>Trigger time</th><th>Latest ack</th><th>Duration</th><th>Size</th><th>Alignment</th>' +
    `<th>Path / failure</th></tr></thead><tbody>${rows.join('')}</tbody></table>${pages > 1 ? pager : ''}`
  );
}
