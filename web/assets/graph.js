// The operator graph: the job's `plan.nodes` laid out left to right in layers (a node sits one
// layer right of its furthest input), drawn as inline SVG. The SVG is built once per plan; the
// per-second updates only rewrite the metric texts, so a job with hundreds of operators stays
// cheap to refresh.

import { esc, fmtCount } from './util.js';

const W = 210;
const H = 78;
const GAP_X = 60;
const GAP_Y = 22;
const PAD = 12;

/** Layers and positions: `{ pos: Map<id, {x, y}>, width, height }`. */
export function layout(nodes) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const inputs = (n) => (n.inputs || []).map((i) => i.id).filter((id) => byId.has(id));
  const outs = new Map(nodes.map((n) => [n.id, []]));
  const indeg = new Map();
  for (const n of nodes) {
    const ins = inputs(n);
    indeg.set(n.id, ins.length);
    for (const i of ins) outs.get(i).push(n.id);
  }
  // Kahn's order; the layer is the longest path from a source.
  const layer = new Map();
  const queue = nodes.filter((n) => indeg.get(n.id) === 0).map((n) => n.id);
  for (const id of queue) layer.set(id, 0);
  for (let q = 0; q < queue.length; q += 1) {
    const id = queue[q];
    for (const o of outs.get(id)) {
      layer.set(o, Math.max(layer.get(o) ?? 0, layer.get(id) + 1));
      indeg.set(o, indeg.get(o) - 1);
      if (indeg.get(o) === 0) queue.push(o);
    }
  }
  // A cycle (not expected in a plan) must not hide nodes: they go to layer 0.
  for (const n of nodes) if (!layer.has(n.id)) layer.set(n.id, 0);
  const layers = [];
  for (const n of nodes) {
    const l = layer.get(n.id);
    (layers[l] ||= []).push(n.id);
  }
  // One barycenter pass: a node sits near the average row of its inputs, which keeps edges short.
  const row = new Map();
  layers.forEach((ids, l) => {
    if (l > 0) {
      const key = (id) => {
        const ins = inputs(byId.get(id)).map((i) => row.get(i) ?? 0);
        return ins.length ? ins.reduce((a, b) => a + b, 0) / ins.length : 0;
      };
      const keys = new Map(ids.map((id) => [id, key(id)]));
      ids.sort((a, b) => keys.get(a) - keys.get(b));
    }
    ids.forEach((id, i) => row.set(id, i));
  });
  const tallest = Math.max(1, ...layers.map((ids) => (ids ? ids.length : 0)));
  const pos = new Map();
  layers.forEach((ids, l) => {
    const offset = ((tallest - ids.length) * (H + GAP_Y)) / 2;
    ids.forEach((id, i) => pos.set(id, { x: PAD + l * (W + GAP_X), y: PAD + offset + i * (H + GAP_Y) }));
  });
  return {
    pos,
    width: PAD * 2 + layers.length * (W + GAP_X) - GAP_X,
    height: PAD * 2 + tallest * (H + GAP_Y) - GAP_Y,
  };
}

function clip(s, n) {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

/** The operator's display name: the first line of Flink's `description` or the vertex name. */
export function operatorName(node, vertex) {
  const raw = (vertex && vertex.name) || node.description || node.id;
  return String(raw).split(/<br\s*\/?>/)[0].replace(/^\+-\s*/, '');
}

/** The SVG markup for `plan`; metric texts carry ids the updater fills in. */
export function renderGraph(plan, vertices) {
  const nodes = plan.nodes || [];
  const vById = new Map((vertices || []).map((v) => [v.id, v]));
  const { pos, width, height } = layout(nodes);
  const edges = [];
  for (const n of nodes) {
    const to = pos.get(n.id);
    for (const input of n.inputs || []) {
      const from = pos.get(input.id);
      if (!from) continue;
      const x1 = from.x + W;
      const y1 = from.y + H / 2;
      const x2 = to.x - 4;
      const y2 = to.y + H / 2;
      const mx = (x1 + x2) / 2;
      edges.push(
        `<path class="edge" d="M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}" marker-end="url(#arrow)">` +
          `<title>${esc(input.ship_strategy || '')}</title></path>`,
      );
    }
  }
  const boxes = nodes.map((n) => {
    const p = pos.get(n.id);
    const name = operatorName(n, vById.get(n.id));
    return (
      `<g class="node" data-uid="${esc(n.id)}" transform="translate(${p.x},${p.y})">` +
      `<title>${esc(name)}\nuid ${esc(n.id)}</title>` +
      `<rect class="box bp-ok" width="${W}" height="${H}" rx="6"></rect>` +
      `<text class="op-name" x="10" y="18">${esc(clip(name, 28))}</text>` +
      `<text class="op-uid" x="10" y="34">uid ${esc(clip(n.id, 20))} · p=${esc(n.parallelism)}</text>` +
      `<text class="op-rec" x="10" y="51">in – · out –</text>` +
      `<text class="op-bp" x="10" y="67">backpressure –</text></g>`
    );
  });
  return (
    `<svg class="graph" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" data-width="${width}">` +
    `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">` +
    `<path d="M0,0 L10,5 L0,10 z" class="arrow"></path></marker></defs>` +
    `${edges.join('')}${boxes.join('')}</svg>`
  );
}

/**
 * Backpressure of a vertex as Flink grades it (ok ≤ 10 %, low ≤ 50 %, high): the share of
 * time its subtasks were backpressured between two polls (`accumulated-backpressured-time`).
 */
export function backpressure(vertex, previous, elapsedMs) {
  const m = vertex.metrics || {};
  if (typeof m['backpressure-level'] === 'string') {
    return { level: m['backpressure-level'].toLowerCase(), ratio: null };
  }
  const acc = Number(m['accumulated-backpressured-time'] || 0);
  const p = Math.max(1, Number(vertex.parallelism) || 1);
  let ratio;
  if (previous !== undefined && elapsedMs > 0) {
    ratio = (acc - previous) / (elapsedMs * p);
  } else {
    ratio = vertex.duration > 0 ? acc / (vertex.duration * p) : 0;
  }
  ratio = Math.min(1, Math.max(0, ratio || 0));
  const level = ratio <= 0.1 ? 'ok' : ratio <= 0.5 ? 'low' : 'high';
  return { level, ratio };
}

/** Rewrites the metric texts of the graph in `root` from the job's vertices. */
export function updateGraph(root, vertices, levels) {
  const groups = new Map();
  for (const g of root.querySelectorAll('g.node')) groups.set(g.dataset.uid, g);
  for (const v of vertices || []) {
    const g = groups.get(v.id);
    if (!g) continue;
    const m = v.metrics || {};
    const bp = levels.get(v.id) || { level: 'ok', ratio: 0 };
    const pct = bp.ratio === null ? '' : ` (${Math.round(bp.ratio * 100)} %)`;
    g.querySelector('.op-rec').textContent = `in ${fmtCount(m['read-records'])} · out ${fmtCount(m['write-records'])}`;
    g.querySelector('.op-bp').textContent = `backpressure ${bp.level}${pct}`;
    g.querySelector('rect').setAttribute('class', `box bp-${bp.level}`);
  }
}
