// A standalone Sluice cluster on loopback for the browser tests: a master (`sluice-am`), worker
// daemons (`sluice-worker`) and jobs submitted with the `sluice` CLI, as a user would.

import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** Where the release binaries are: `SLUICE_BIN_DIR`, else `$CARGO_TARGET_DIR/release`, else `target/release`. */
export const BIN_DIR =
  process.env.SLUICE_BIN_DIR || join(process.env.CARGO_TARGET_DIR || join(REPO, 'target'), 'release');

export function bin(name) {
  const p = join(BIN_DIR, name);
  if (!existsSync(p)) throw new Error(`${p} is missing: build the workspace first (cargo build --release --workspace)`);
  return p;
}

export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(what, timeoutMs, f) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await f();
      if (v) return v;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

export class Cluster {
  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'sluice-browser-'));
    this.children = [];
  }

  spawnLogged(name, path, args) {
    const out = openSync(join(this.dir, `${name}.out`), 'w');
    const child = spawn(path, args, { stdio: ['ignore', out, out], env: { ...process.env, SLUICE_LOG_DIR: this.dir } });
    this.children.push(child);
    return child;
  }

  log(name) {
    try {
      return readFileSync(join(this.dir, `${name}.out`), 'utf8');
    } catch {
      return '';
    }
  }

  /** Starts the master (extra `-D` settings in `conf`) and `workers` workers with 4 slots each. */
  async start({ workers = 1, conf = [] } = {}) {
    this.rpc = await freePort();
    this.rest = await freePort();
    const d = (kv) => ['-D', kv];
    this.spawnLogged('master', bin('sluice-am'), [
      ...d(`rest.port=${this.rest}`),
      ...d(`jobmanager.rpc.port=${this.rpc}`),
      ...d('heartbeat.interval=200ms'),
      ...d('heartbeat.timeout=5s'),
      ...conf.flatMap(d),
    ]);
    this.url = `http://127.0.0.1:${this.rest}/`;
    await waitFor('the master REST API', 20000, () => this.get('v1/overview'));
    for (let i = 0; i < workers; i += 1) {
      this.spawnLogged(`worker-${i}`, bin('sluice-worker'), [
        ...d(`jobmanager.rpc.port=${this.rpc}`),
        ...d('taskmanager.numberOfTaskSlots=4'),
        ...d(`taskmanager.resource-id=worker-${i}`),
        ...d('heartbeat.interval=200ms'),
        ...d('heartbeat.timeout=5s'),
      ]);
    }
    await waitFor('the workers to register', 20000, async () => (await this.get('v1/overview')).taskmanagers === workers);
  }

  async get(path) {
    const res = await fetch(this.url + path);
    if (!res.ok) throw new Error(`GET ${path}: ${res.status}`);
    return res.json();
  }

  /** Bundles `target/release/<job>` and submits it detached; returns the job id. */
  submit(job, flags, args) {
    const bundle = join(this.dir, `${job}.bundle`);
    if (!existsSync(bundle)) execFileSync(bin('sluice'), ['bundle', bin(job), '-o', bundle], { stdio: 'pipe' });
    const out = execFileSync(
      bin('sluice'),
      ['run', '-m', `127.0.0.1:${this.rest}`, '-d', ...flags.flatMap((f) => ['-D', f]), bundle, '--', ...args],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const m = /Job has been submitted with JobID (\S+)/.exec(out);
    if (!m) throw new Error(`no job id in: ${out}`);
    return m[1];
  }

  /** Kills every process started here; the directory (logs, checkpoints) stays only on failure. */
  stop(failed) {
    for (const c of this.children) if (c.exitCode === null) c.kill('SIGKILL');
    if (!failed) rmSync(this.dir, { recursive: true, force: true });
  }
}
