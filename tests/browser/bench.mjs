// Page load time of the dashboard's job page for a large job: a real master and worker run
// `sluice-testjob --chain` with 100 operators and a fast checkpoint interval until the history
// (`web.checkpoints.history=1000`) holds 1,000 checkpoints; then headless Chromium loads the job
// page several times and the time from navigation start until the graph (100 nodes) and the
// checkpoint history (chart of all 1,000, the table's first page) are rendered is printed.
//
// `node bench.mjs [--operators 100] [--checkpoints 1000] [--runs 5]`

import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { Cluster, sleep, waitFor } from './cluster.mjs';

const opt = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const OPERATORS = opt('operators', 100);
const CHECKPOINTS = opt('checkpoints', 1000);
const RUNS = opt('runs', 5);
// sluice-testjob's own operators before the chain: numbers, keys, counts, format, print.
const BASE_OPERATORS = 5;

async function main() {
  const cluster = new Cluster();
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
  try {
    const history = `web.checkpoints.history=${CHECKPOINTS}`;
    await cluster.start({ workers: 1, conf: [history] });
    const jid = cluster.submit(
      'sluice-testjob',
      ['execution.checkpointing.interval=10ms', `state.checkpoints.dir=file://${join(cluster.dir, 'ckpt')}`, history, 'parallelism.default=1'],
      ['--rate', '2000', '--chain', String(OPERATORS - BASE_OPERATORS)],
    );
    const job = await waitFor('the job to run', 30000, async () => {
      const j = await cluster.get(`v1/jobs/${jid}`);
      return j.state === 'RUNNING' && j;
    });
    const operators = job.plan.nodes.length;
    console.log(`job ${jid}: ${operators} operators; waiting for ${CHECKPOINTS} checkpoints (logs in ${cluster.dir})`);
    const started = Date.now();
    let last = 0;
    await waitFor(`${CHECKPOINTS} checkpoints`, 15 * 60 * 1000, async () => {
      const c = await cluster.get(`v1/jobs/${jid}/checkpoints`);
      const n = c.history.filter((h) => h.status !== 'IN_PROGRESS').length;
      if (Date.now() - last > 10000) {
        last = Date.now();
        console.log(`  ${n} checkpoints in the history (${c.counts.completed} completed, ${c.counts.failed} failed)`);
      }
      return n >= CHECKPOINTS;
    });
    console.log(`history full after ${((Date.now() - started) / 1000).toFixed(0)} s`);
    const t = Date.now();
    const res = await fetch(`${cluster.url}v1/jobs/${jid}/checkpoints`);
    const body = await res.text();
    console.log(`GET v1/jobs/<id>/checkpoints: ${(body.length / 1024).toFixed(0)} KiB in ${Date.now() - t} ms`);

    const times = [];
    for (let run = 0; run < RUNS; run += 1) {
      const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
      const page = await context.newPage();
      await page.goto(`${cluster.url}#/jobs/${jid}`);
      // Rendered: every graph node, the operator table, the chart of the whole history and
      // the first page of the history table, whose counter names the whole history.
      await page.waitForFunction(
        ([ops, cks]) =>
          document.querySelectorAll('svg.graph g.node').length >= ops &&
          document.querySelector('#operators tr') &&
          document.querySelector('svg.chart polyline.s-dur') &&
          document.querySelector('tr.ckpt') &&
          Number(document.querySelector('.ck-total')?.textContent) >= cks,
        [operators, CHECKPOINTS],
        { polling: 'raf', timeout: 30000 },
      );
      const ms = await page.evaluate(() => performance.now());
      // Where the time went: when the page's scripts and the REST documents arrived.
      const timing = await page.evaluate(() =>
        performance
          .getEntriesByType('resource')
          .filter((e) => /\.js$|v1\/jobs\/[^/]+(\/checkpoints)?$/.test(e.name))
          .map((e) => `${e.name.replace(/^.*\/(v1\/jobs\/[^/]{0,6})[^/]*/, '$1…').replace(/^.*\//, '')} ${e.startTime.toFixed(0)}-${e.responseEnd.toFixed(0)}`)
          .slice(0, 9)
          .join(', '),
      );
      // One more refresh cycle after the first render: what a poll costs with a full history.
      const poll = await page.evaluate(
        () =>
          new Promise((done) => {
            let busy = 0;
            const obs = new PerformanceObserver((list) => {
              for (const e of list.getEntries()) busy += e.duration;
            });
            obs.observe({ type: 'longtask', buffered: false });
            setTimeout(() => {
              obs.disconnect();
              done(busy);
            }, 3000);
          }),
      );
      times.push(ms);
      console.log(`run ${run + 1}: graph (${operators} nodes), chart and table of ${CHECKPOINTS} checkpoints rendered ${ms.toFixed(0)} ms after navigation; long tasks in the next 3 s of polling: ${poll.toFixed(0)} ms\n  loaded (ms from navigation): ${timing}`);
      await context.close();
    }
    times.sort((a, b) => a - b);
    console.log(`page load (median of ${RUNS}): ${times[Math.floor(times.length / 2)].toFixed(0)} ms, min ${times[0].toFixed(0)} ms, max ${times[times.length - 1].toFixed(0)} ms`);
    await fetch(`${cluster.url}v1/jobs/${jid}?mode=cancel`, { method: 'PATCH' });
    await sleep(500);
  } catch (e) {
    console.error(`FAILED: ${e.stack || e}`);
    console.error(`master log:\n${cluster.log('master').slice(-4000)}`);
    process.exitCode = 1;
  } finally {
    await browser.close();
    cluster.stop(process.exitCode === 1);
  }
}

await main();
