// The job page: header with actions, operator graph and table, checkpoints, exceptions and
// restarts. `refresh()` is called once a second by the app and updates the page in place.

import { backpressure, operatorName, renderGraph, updateGraph } from './graph.js';
import { renderChart, renderCounts, renderTable, signature } from './checkpoints.js';
import { badge, esc, fmtCount, fmtDuration, fmtTime, getJson, isTerminal, send } from './util.js';

export class JobPage {
  constructor(root, jobId) {
    this.root = root;
    this.id = jobId;
    this.base = `v1/jobs/${encodeURIComponent(jobId)}`;
    this.planKey = null;
    this.ckptKey = null;
    this.excKey = null;
    this.bpPrev = new Map();
    this.bpAt = 0;
    this.levels = new Map();
    this.ops = [];
    this.state = null;
    root.innerHTML = `
      <p class="crumbs"><a href="#/">Overview</a> › job <code>${esc(jobId)}</code></p>
      <header class="job-head"><h2 id="job-name">Job ${esc(jobId)}</h2>
        <div id="job-meta" class="muted"></div>
        <div id="actions" class="actions" hidden>
          <input id="sp-target" placeholder="savepoint directory (default: state.savepoints.dir)" size="44">
          <button id="btn-savepoint" type="button">Savepoint</button>
          <button id="btn-stop" type="button">Stop with savepoint</button>
          <button id="btn-cancel" type="button" class="danger">Cancel job</button>
        </div>
        <ul id="operations" class="operations"></ul>
      </header>
      <p id="job-error" class="error" hidden></p>
      <h3>Operators</h3>
      <div class="graph-tools"><label><input type="checkbox" id="graph-fit"> fit to width</label></div>
      <div id="graph" class="graph-wrap"></div>
      <table class="operators"><thead><tr><th>Operator</th><th>uid</th><th>Parallelism</th><th>Status</th>
        <th>Records in</th><th>Records out</th><th>Backpressure</th></tr></thead><tbody id="operators"></tbody></table>
      <h3>Checkpoints</h3>
      <div id="ck-counts"></div><div id="ck-chart" class="chart-wrap"></div><div id="ck-table" class="table-wrap"></div>
      <h3>Exceptions and restarts</h3>
      <div id="exceptions"><p class="muted">No exception.</p></div>`;
    this.$ = (id) => root.querySelector(`#${id}`);
    this.$('btn-savepoint').onclick = () => this.savepoint(false);
    this.$('btn-stop').onclick = () => this.savepoint(true);
    this.$('btn-cancel').onclick = () => this.cancel();
    this.ckPage = 0;
    this.ckHistory = [];
    this.$('ck-table').onclick = (e) => {
      const page = e.target.dataset && e.target.dataset.page;
      if (page === undefined) return;
      this.ckPage = Number(page);
      this.$('ck-table').innerHTML = renderTable(this.ckHistory, this.ckPage);
    };
    this.$('graph-fit').onchange = (e) => this.root.querySelector('#graph').classList.toggle('fit', e.target.checked);
  }

  async refresh() {
    const [job, ckpts, exc] = await Promise.allSettled([
      getJson(this.base),
      getJson(`${this.base}/checkpoints`),
      getJson(`${this.base}/exceptions`),
    ]);
    const err = this.$('job-error');
    if (job.status === 'rejected') {
      err.hidden = false;
      err.textContent = job.reason.message;
      return;
    }
    err.hidden = true;
    this.renderJob(job.value);
    if (ckpts.status === 'fulfilled') this.renderCheckpoints(ckpts.value);
    if (exc.status === 'fulfilled') this.renderExceptions(exc.value, job.value.state);
    await this.pollOperations();
  }

  renderJob(job) {
    this.state = job.state;
    this.$('job-name').innerHTML = `${esc(job.name)} ${badge(job.state)}`;
    this.$('job-meta').innerHTML =
      `id <code>${esc(job.jid)}</code> · started ${esc(fmtTime(job['start-time']))}` +
      ` · ${job['end-time'] > 0 ? `ended ${esc(fmtTime(job['end-time']))} · ` : ''}duration ${esc(fmtDuration(job.duration))}`;
    // Read-only servers hide the actions through the body's `read-only` class.
    this.$('actions').hidden = isTerminal(job.state);
    const plan = job.plan || { nodes: [] };
    const key = JSON.stringify((plan.nodes || []).map((n) => [n.id, n.parallelism, (n.inputs || []).map((i) => i.id)]));
    if (key !== this.planKey) {
      this.planKey = key;
      this.$('graph').innerHTML = renderGraph(plan, job.vertices);
    }
    const now = job.now || Date.now();
    const elapsed = this.bpAt ? now - this.bpAt : 0;
    for (const v of job.vertices || []) {
      this.levels.set(v.id, backpressure(v, elapsed > 0 ? this.bpPrev.get(v.id) : undefined, elapsed));
      this.bpPrev.set(v.id, Number((v.metrics || {})['accumulated-backpressured-time'] || 0));
    }
    this.bpAt = now;
    updateGraph(this.$('graph'), job.vertices, this.levels);
    const nodes = new Map((plan.nodes || []).map((n) => [n.id, n]));
    this.$('operators').innerHTML = (job.vertices || [])
      .map((v) => {
        const m = v.metrics || {};
        const bp = this.levels.get(v.id);
        return (
          `<tr data-uid="${esc(v.id)}"><td>${esc(operatorName(nodes.get(v.id) || {}, v))}</td><td><code>${esc(v.id)}</code></td>` +
          `<td>${esc(v.parallelism)}</td><td>${badge(v.status)}</td><td>${esc(fmtCount(m['read-records']))}</td>` +
          `<td>${esc(fmtCount(m['write-records']))}</td><td class="bp-${esc(bp.level)}">${esc(bp.level)}</td></tr>`
        );
      })
      .join('');
  }

  renderCheckpoints(doc) {
    const key = signature(doc);
    if (key === this.ckptKey) return;
    this.ckptKey = key;
    const history = doc.history || [];
    this.$('ck-counts').innerHTML = renderCounts(doc);
    const chart = this.$('ck-chart');
    chart.innerHTML = renderChart(history, chart.clientWidth - 14);
    this.ckHistory = history;
    this.$('ck-table').innerHTML = renderTable(history, this.ckPage);
  }

  renderExceptions(doc, state) {
    const entries = (doc.exceptionHistory && doc.exceptionHistory.entries) || [];
    const key = `${doc['root-exception']}|${entries.length}|${state}`;
    if (key === this.excKey) return;
    this.excKey = key;
    if (!doc['root-exception'] && entries.length === 0) {
      this.$('exceptions').innerHTML = '<p class="muted">No exception.</p>';
      return;
    }
    // Every failure but a final one (the job FAILED) was followed by a restart.
    const restarts = Math.max(0, entries.length - (state === 'FAILED' ? 1 : 0));
    const rows = entries
      .map(
        (e, i) =>
          `<tr><td>${esc(fmtTime(e.timestamp))}</td><td>${esc(e.exceptionName || '')}</td>` +
          `<td>${i === 0 && state === 'FAILED' ? 'job failed' : 'restarted'}</td><td><pre>${esc(e.stacktrace || '')}</pre></td></tr>`,
      )
      .join('');
    this.$('exceptions').innerHTML =
      `<div class="root-cause"><b>Root cause</b> (${esc(fmtTime(doc.timestamp))}):<pre>${esc(doc['root-exception'] || '')}</pre></div>` +
      `<p>Restarts: <b class="restarts">${restarts}</b></p>` +
      '<table class="exceptions"><thead><tr><th>Time</th><th>Exception</th><th>Outcome</th><th>Message</th></tr></thead>' +
      `<tbody>${rows}</tbody></table>`;
  }

  async savepoint(stop) {
    const target = this.$('sp-target').value.trim();
    const what = stop ? 'Stop the job with a savepoint' : 'Trigger a savepoint';
    if (!window.confirm(`${what} for job ${this.id}?`)) return;
    try {
      const body = stop
        ? { drain: false, ...(target ? { targetDirectory: target } : {}) }
        : { 'cancel-job': false, ...(target ? { 'target-directory': target } : {}) };
      const res = await send('POST', `${this.base}/${stop ? 'stop' : 'savepoints'}`, body);
      this.ops.unshift({ kind: stop ? 'Stop with savepoint' : 'Savepoint', trigger: res['request-id'], state: 'IN_PROGRESS' });
    } catch (e) {
      this.ops.unshift({ kind: stop ? 'Stop with savepoint' : 'Savepoint', state: 'FAILED', text: e.message });
    }
    this.renderOperations();
  }

  async cancel() {
    if (!window.confirm(`Cancel job ${this.id}? Its state is lost unless a checkpoint is retained.`)) return;
    try {
      await send('PATCH', `${this.base}?mode=cancel`);
      this.ops.unshift({ kind: 'Cancel', state: 'COMPLETED', text: 'cancellation requested' });
    } catch (e) {
      this.ops.unshift({ kind: 'Cancel', state: 'FAILED', text: e.message });
    }
    this.renderOperations();
  }

  async pollOperations() {
    const pending = this.ops.filter((o) => o.state === 'IN_PROGRESS' && o.trigger);
    for (const op of pending) {
      try {
        const s = await getJson(`${this.base}/savepoints/${encodeURIComponent(op.trigger)}`);
        if (s.status && s.status.id === 'COMPLETED') {
          const o = s.operation || {};
          const cause = o['failure-cause'];
          op.state = cause ? 'FAILED' : 'COMPLETED';
          op.text = cause ? cause['stack-trace'] || 'failed' : o.location;
        }
      } catch (e) {
        op.state = 'FAILED';
        op.text = e.message;
      }
    }
    this.renderOperations();
  }

  renderOperations() {
    this.$('operations').innerHTML = this.ops
      .map((o) => {
        const text = o.state === 'COMPLETED' && o.kind !== 'Cancel'
          ? `path <code class="savepoint-path">${esc(o.text)}</code>`
          : esc(o.text || 'in progress…');
        return `<li class="op-${esc(o.state.toLowerCase())}">${esc(o.kind)}: ${text}</li>`;
      })
      .join('');
  }
}
