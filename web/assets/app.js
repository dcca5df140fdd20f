// The dashboard: hash routes (`#/` overview and job list, `#/jobs/<id>` a job), each view
// refreshed once a second from the REST API, so the page follows the jobs without a reload.

import { JobPage } from './job.js';
import { badge, esc, fmtDuration, fmtTime, getJson } from './util.js';

const POLL_MS = 1000;

/**
 * Read-only (no savepoint/stop/cancel buttons) when the server says it takes no actions:
 * `features.web-cancel` false, `features.web-history` true (the HistoryServer), or no
 * `v1/config` at all.
 */
async function detectReadOnly() {
  try {
    const cfg = await getJson('v1/config');
    const f = cfg.features || {};
    return f['web-cancel'] === false || f['web-history'] === true;
  } catch {
    return true;
  }
}

class OverviewPage {
  constructor(root) {
    this.root = root;
    root.innerHTML = `
      <section><h2>Cluster</h2><div id="cluster" class="stats"></div></section>
      <section><h2>Workers</h2><div id="workers"></div></section>
      <section><h2>Jobs</h2><p id="jobs-error" class="error" hidden></p><div id="jobs"></div></section>`;
  }

  async refresh() {
    const [overview, jobs, tms] = await Promise.allSettled([
      getJson('v1/overview'),
      getJson('v1/jobs/overview'),
      getJson('v1/taskmanagers'),
    ]);
    const list = jobs.status === 'fulfilled' ? jobs.value.jobs || [] : [];
    const err = this.root.querySelector('#jobs-error');
    err.hidden = jobs.status === 'fulfilled';
    if (jobs.status === 'rejected') err.textContent = jobs.reason.message;
    this.renderCluster(overview.status === 'fulfilled' ? overview.value : null, list);
    this.renderWorkers(tms.status === 'fulfilled' ? tms.value.taskmanagers || [] : null);
    this.renderJobs(list);
  }

  renderCluster(o, jobs) {
    // A server without `v1/overview` (the HistoryServer) still gets job counts from the list.
    const count = (s) => jobs.filter((j) => j.state === s).length;
    const v = o || {
      'jobs-running': jobs.filter((j) => !['FINISHED', 'CANCELED', 'FAILED'].includes(j.state)).length,
      'jobs-finished': count('FINISHED'),
      'jobs-cancelled': count('CANCELED'),
      'jobs-failed': count('FAILED'),
    };
    const item = (k, val) => `<div class="stat"><div class="v">${esc(val ?? '–')}</div><div class="k">${k}</div></div>`;
    this.root.querySelector('#cluster').innerHTML =
      (o ? item('workers', v.taskmanagers) + item('slots', v['slots-total']) + item('slots free', v['slots-available']) : '') +
      item('running', v['jobs-running']) + item('finished', v['jobs-finished']) +
      item('cancelled', v['jobs-cancelled']) + item('failed', v['jobs-failed']);
  }

  renderWorkers(tms) {
    const el = this.root.querySelector('#workers');
    if (tms === null) {
      el.innerHTML = '<p class="muted">Not available.</p>';
      return;
    }
    el.innerHTML = tms.length
      ? '<table class="workers"><thead><tr><th>Id</th><th>Address</th><th>Slots</th></tr></thead><tbody>' +
        tms.map((t) => `<tr><td><code>${esc(t.id)}</code></td><td>${esc(t.path)}</td><td>${esc(t.slotsNumber)}</td></tr>`).join('') +
        '</tbody></table>'
      : '<p class="muted">No worker registered.</p>';
  }

  renderJobs(jobs) {
    const el = this.root.querySelector('#jobs');
    el.innerHTML = jobs.length
      ? '<table class="jobs"><thead><tr><th>Name</th><th>Id</th><th>Status</th><th>Start</th><th>End</th>' +
        '<th>Duration</th><th>Tasks</th></tr></thead><tbody>' +
        jobs
          .map(
            (j) =>
              `<tr class="job-row" data-jid="${esc(j.jid)}"><td><a href="#/jobs/${encodeURIComponent(j.jid)}">${esc(j.name)}</a></td>` +
              `<td><code>${esc(j.jid)}</code></td><td>${badge(j.state)}</td><td>${esc(fmtTime(j['start-time']))}</td>` +
              `<td>${esc(fmtTime(j['end-time']))}</td><td>${esc(fmtDuration(j.duration))}</td>` +
              `<td>${esc((j.tasks || {}).total ?? '')}</td></tr>`,
          )
          .join('') +
        '</tbody></table>'
      : '<p class="muted">No job yet.</p>';
  }
}

let current = null;
let timer = null;
let generation = 0;
let shownGeneration = 0;

/** Shows the view of the current hash and keeps refreshing it until the route changes. */
function route() {
  generation += 1;
  const mine = generation;
  clearTimeout(timer);
  const main = document.getElementById('main');
  const m = /^#\/jobs\/([^/?]+)/.exec(window.location.hash);
  current = m ? new JobPage(main, decodeURIComponent(m[1])) : new OverviewPage(main);
  document.body.dataset.view = m ? 'job' : 'overview';
  const tick = async () => {
    try {
      // A background tab does not poll; it catches up when shown again.
      if (!document.hidden || mine !== shownGeneration) {
        shownGeneration = mine;
        await current.refresh();
      }
      document.getElementById('conn').textContent = `updated ${new Date().toLocaleTimeString()}`;
      document.getElementById('conn').className = 'ok';
    } catch (e) {
      document.getElementById('conn').textContent = `connection lost: ${e.message}`;
      document.getElementById('conn').className = 'error';
    }
    // A poll never overlaps the previous one: the next starts a second after this one ended.
    if (mine === generation) timer = setTimeout(tick, POLL_MS);
  };
  tick();
}

function start() {
  // The view loads at once; the actions appear when the server's config says they are allowed
  // (the page starts read-only, see index.html).
  detectReadOnly().then((ro) => {
    document.body.classList.toggle('read-only', ro);
    document.getElementById('mode').textContent = ro ? 'read-only' : '';
  });
  window.addEventListener('hashchange', route);
  route();
}

start();
