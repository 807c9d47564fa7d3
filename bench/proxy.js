#!/usr/bin/env node
// SOCKS5 proxy benchmark: splicer's proxy (engine splice and engine js) side by side with microsocks
// and Dante, in the same run, on 127.0.0.1 only.
//
//   node bench/proxy.js [--only direct,splice,js,microsocks,dante] [--tests conn,bulk,idle,c10k,fds]
//                       [--count 2000] [--clients 1,64] [--max-seconds 20] [--size 1024] [--warmup 4000] [--open 0]
//                       [--gib 1] [--streams 1,8] [--warmup-mib 64] [--runs 3] [--timeout 120]
//                       [--tunnels N] [--idle-seconds 30] [--echo-seconds 30] [--fd-count 100000] [--fd-seconds 180]
//                       [--workers 1,2] [--base-cli PATH] [--json FILE]
//   npm run bench:proxy -- [options]
//
// Servers (each started fresh for every measurement, warmed up first; missing ones are skipped):
//   direct      no proxy: the client talks to the target itself, no SOCKS (the load driver's ceiling)
//   splice      node dist/cli/main.js proxy --engine splice --log-level silent (info in bulk runs, to check
//               from its `connection closed` records that every pair used the engine and carried every byte)
//   splice-t0   the same with --threads 0: the splice loop on the main thread
//   splice-node the same with --accept node: net.Server and net.Socket for the handshake
//   splice-metrics  splice with --metrics on, scraped (GET /metrics) once a second while it runs: the
//               cost of metrics, as a ratio to the splice row of the same run
//   js          the same with --engine js
//   base, base-t0  splice and splice-t0 run by another build (--base-cli PATH: its dist/cli/main.js, e.g. a
//               worktree of an earlier commit), to measure a change against the commit before it in one run
//   --workers N[,M...]  splice and js run with --workers N (each worker its own SO_REUSEPORT socket); with
//               more than one level, a row per level: splice-w1, splice-w2, js-w1... (default 1: rows splice, js)
//   microsocks  microsocks -i 127.0.0.1 -p P                  (a thread per connection)
//   dante       danted -f <generated danted.conf> -N 1 -p <tmp>  (foreground; forks negotiate, request
//               and io children: their CPU is counted too, see below)
//
// Measurements:
//   conn   --count connections per client level (split across the clients; each level also stops
//          starting connections after --max-seconds), for each --clients level: every connection does
//          connect(), SOCKS5 greeting (no auth), CONNECT 127.0.0.1:R, sends --size bytes, reads --size
//          bytes back from the target (which reads the request, then answers), closes. Reported:
//          connections/s (first connect to last connection done), latency p50/p99 (connect() start to
//          the last response byte), handshake p50 (connect() start to the SOCKS5 reply), proxy CPU µs per connection.
//          Each level starts with --warmup connections (default 4000, not measured): V8 keeps compiling
//          splicer's connection path over its first few thousand connections, and a proxy that has run
//          for a while is past that; --warmup 1000 shows the cost part way through it.
//          --open N keeps N more connections open through the proxy meanwhile (SOCKS5 CONNECT to an idle
//          target in this process, opened after the warm-up), the cost of a connection on a busy proxy;
//          splicer then runs with --max-connections and --max-per-client raised to fit them.
//   bulk   --gib GiB one direction (client → target) through SOCKS5 CONNECT, split across --streams
//          connections: GB/s (10^9 bytes/s, first connect to the last byte at the target) and proxy CPU
//          seconds per GiB.
//   idle   (not run by default) a fresh server; its RLIMIT_NOFILE soft limit raised to the hard limit (prlimit, on
//          every process of its tree), splicer with --max-connections/--max-per-client raised to fit. 200 short
//          connections first (one-off costs: code loaded, JIT), then its RSS (VmRSS of /proc/PID/status, summed
//          over the process and its live descendants: Dante's children; Pss from smaps_rollup too, which does not
//          count a page shared by Dante's forks once per process), fds (/proc/PID/fd) and the kernel's TCP memory.
//          That is measured after --idle-seconds of rest, as the held state is: a garbage-collected heap gives
//          memory back only once it has been quiet for a while, so both are measured at rest. Then --tunnels
//          SOCKS5 CONNECTs through it to the driver's echo target, held idle for --idle-seconds, then measured again. Reported per idle tunnel: user-space bytes = (RSS after - RSS before) / tunnels;
//          kernel socket-buffer bytes = the change of `TCP: mem` in /proc/net/sockstat (pages of every TCP
//          socket of the machine: a tunnel is four sockets on loopback, two of the proxy's and two of the
//          driver's; an idle one holds next to nothing there) and kernel slab bytes = the change of Slab in
//          /proc/meminfo (socket, file, epoll and pipe objects of the four sockets and the proxy's; machine-wide,
//          so a busy neighbour moves it). Then every tunnel is closed and the proxy's fd count must come back to
//          its count before (fdBefore, fdAfter).
//          --tunnels: default (hard RLIMIT_NOFILE - 400) / 2, as many as the fd limit allows (the driver holds
//          two fds a tunnel, the client side and the target side, as the proxy does): 9800 with 20000.
//   c10k   (not run by default) the same --tunnels held open, then each echoes 1 KiB through the proxy once a
//          second (turns spread evenly over the second) for --echo-seconds: failures (a tunnel that fails in
//          the handshake, errors, sees EOF or gets no echo within 5 s; must be 0), echo latency p50/p99 (the
//          send to the last echoed byte), the proxy's CPU (seconds, and % of one core) and RSS meanwhile, and
//          the driver's and the other processes' CPU (on a busy machine the latency is mostly waiting for a CPU).
//   fds    (not run by default) fd hygiene: after a warm-up (--warmup connections), --fd-count short SOCKS5
//          connections (as conn, 64 clients, 1 KiB each way; stops starting new ones after --fd-seconds), then
//          the proxy's fd count (/proc/PID/fd entries, its tree for Dante) before and after: they must match,
//          and so must its TCP sockets (fds whose inode is in /proc/net/tcp*). A server that forked more
//          children meanwhile (Dante keeps a pool, each child with fds of its own) passes on its TCP sockets.
// --runs N repeats everything N times (interleaved: every server per measurement, then the next run)
// and reports medians.
//
// Load driver: bench/socksload.c, compiled at startup with cc -O2 -pthread into
// .bench-out/socksload-<hash of the source> (cc is required). One process, two epoll threads: the
// clients, and the targets (request/response server, byte sink, echo server; the held tunnels of
// idle and c10k are the driver's too). C, not Node, so that on a small
// machine the clients and the target cost little next to the proxy and the proxy is the limit
// (the `direct` row shows the driver's own ceiling).
// Proxy CPU: utime+stime+cutime+cstime from /proc/<pid>/stat of the proxy and of every live
// descendant (Dante's children, splicer's workers and their supervisor), read before and after the measured part.
// Everything has a timeout; every child is killed on exit, SIGINT and SIGTERM.
import { parseArgs } from 'node:util';
import { mkdtempSync, writeFileSync, rmSync, existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { tmpdir, release, cpus, loadavg } from 'node:os';
import net from 'node:net';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import {
  HOST, installExitHandlers, spawnChild, waitLine, stopChild, freePort, waitListening,
  cpuSeconds, childPids, sleep, median, which, machineBusySeconds, clockTicks, compileC, treePids,
} from './lib.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, '..');
const GiB = 2 ** 30;
const ALL = ['direct', 'splice', 'splice-metrics', 'splice-t0', 'splice-node', 'js', 'base', 'base-t0', 'microsocks', 'dante'];
// splicer's rows and their flags: splice accepts on the addon's native path (auto picks it), splice-node on net.Server.
const SPLICER_ROWS = {
  splice: ['--engine', 'splice'],
  'splice-node': ['--engine', 'splice', '--accept', 'node'],
  'splice-t0': ['--engine', 'splice', '--threads', '0'],
  // --metrics HOST:PORT is added when it starts (a free port), with a scraper once a second.
  'splice-metrics': ['--engine', 'splice'],
  js: ['--engine', 'js'],
  // --base-cli PATH: the same as splice, run by another build's dist/cli/main.js (an earlier commit).
  base: ['--engine', 'splice'],
  'base-t0': ['--engine', 'splice', '--threads', '0'],
};
const isSplicer = (name) => Object.hasOwn(SPLICER_ROWS, name);
const TESTS = ['conn', 'bulk', 'idle', 'c10k', 'fds'];

// ---------------------------------------------------------------------------------------------
// Options

const { values: opt } = parseArgs({
  options: {
    only: { type: 'string' },
    tests: { type: 'string', default: 'conn,bulk' },
    count: { type: 'string', default: '2000' },
    clients: { type: 'string', default: '1,64' },
    'max-seconds': { type: 'string', default: '20' },
    size: { type: 'string', default: '1024' },
    warmup: { type: 'string', default: '4000' },
    open: { type: 'string', default: '0' },
    gib: { type: 'string', default: '1' },
    streams: { type: 'string', default: '1,8' },
    'warmup-mib': { type: 'string', default: '64' },
    runs: { type: 'string', default: '3' },
    timeout: { type: 'string', default: '120' },
    tunnels: { type: 'string' },
    'idle-seconds': { type: 'string', default: '30' },
    'echo-seconds': { type: 'string', default: '30' },
    'fd-count': { type: 'string', default: '100000' },
    'fd-seconds': { type: 'string', default: '180' },
    json: { type: 'string' },
    workers: { type: 'string', default: '1' },
    'base-cli': { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opt.help) {
  const lines = readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1);
  const header = lines.slice(0, lines.findIndex((l) => !l.startsWith('//')));
  process.stdout.write(header.map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
  process.exit(0);
}
const list = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
const ints = (s) => list(s).map(Number);
const count = Number(opt.count);
const clientLevels = ints(opt.clients);
const maxSeconds = Number(opt['max-seconds']);
const size = Number(opt.size);
const warmup = Number(opt.warmup);
const openCount = Number(opt.open);
const gib = Number(opt.gib);
const totalBytes = Math.round(gib * GiB);
const streamLevels = ints(opt.streams);
const warmupBytes = Math.round(Number(opt['warmup-mib']) * 2 ** 20);
const runs = Number(opt.runs);
const timeoutMs = Number(opt.timeout) * 1000;
const workerLevels = ints(opt.workers);
const CONN_TIMEOUT_S = 5; // one connection of the conn test stuck longer than this counts as failed
const nofileHard = hardNofile('self');
const tunnels = opt.tunnels !== undefined ? Number(opt.tunnels) : Math.max(1, Math.floor((nofileHard - 400) / 2));
const idleSeconds = Number(opt['idle-seconds']);
const echoSeconds = Number(opt['echo-seconds']);
const fdCount = Number(opt['fd-count']);
const fdSeconds = Number(opt['fd-seconds']);
const bad = [];
if (!Number.isInteger(tunnels) || tunnels < 1 || tunnels > 500000) bad.push('--tunnels: an integer, 1..500000');
if (!(idleSeconds >= 0)) bad.push('--idle-seconds >= 0');
if (!(echoSeconds > 0)) bad.push('--echo-seconds > 0');
if (!Number.isInteger(fdCount) || fdCount < 1) bad.push('--fd-count: an integer >= 1');
if (!(fdSeconds > 0)) bad.push('--fd-seconds > 0');
if (!Number.isInteger(count) || count < 1) bad.push('--count: an integer >= 1');
if (clientLevels.length === 0 || clientLevels.some((c) => !Number.isInteger(c) || c < 1 || c > 4096)) bad.push('--clients: integers 1..4096');
if (!(maxSeconds > 0)) bad.push('--max-seconds > 0');
if (!Number.isInteger(size) || size < 1 || size > 2 ** 20) bad.push('--size: bytes, 1..1048576');
if (!Number.isInteger(warmup) || warmup < 0) bad.push('--warmup: an integer >= 0');
if (!Number.isInteger(openCount) || openCount < 0 || openCount > 8000) bad.push('--open: an integer, 0..8000');
if (!(gib > 0)) bad.push('--gib > 0');
if (streamLevels.length === 0 || streamLevels.some((s) => !Number.isInteger(s) || s < 1 || s > 4096)) bad.push('--streams: integers 1..4096');
if (!(warmupBytes >= 0)) bad.push('--warmup-mib >= 0');
if (!Number.isInteger(runs) || runs < 1) bad.push('--runs: an integer >= 1');
if (!(timeoutMs > 0)) bad.push('--timeout > 0');
if (workerLevels.length === 0 || workerLevels.some((w) => !Number.isInteger(w) || w < 1 || w > 64)) bad.push('--workers: integers 1..64');
const only = opt.only ? list(opt.only) : ALL;
for (const f of only) if (!ALL.includes(f)) bad.push(`--only: unknown server ${f} (known: ${ALL.join(', ')})`);
const tests = list(opt.tests);
for (const t of tests) if (!TESTS.includes(t)) bad.push(`--tests: unknown test ${t} (known: ${TESTS.join(', ')})`);
if (bad.length) {
  process.stderr.write(`bad option: ${bad.join('; ')}\n`);
  process.exit(2);
}

function log(msg) {
  process.stderr.write(msg + '\n');
}

// ---------------------------------------------------------------------------------------------
// Which servers can run here. Nothing is installed: what is missing is skipped, and said so.

const microsocksBin = which('microsocks');
const danteBin = which('danted');
const cliJs = path.join(root, 'dist', 'cli', 'main.js');
const baseCli = opt['base-cli'] ? path.resolve(opt['base-cli']) : undefined;

const skipped = {};
const servers = only.filter((f) => {
  if (isSplicer(f) && !existsSync(cliJs)) skipped[f] = 'dist/cli/main.js missing (npx tsc -p tsconfig.build.json)';
  if (f.startsWith('base') && !(baseCli && existsSync(baseCli))) skipped[f] = '--base-cli PATH (another build\'s dist/cli/main.js) not given or missing';
  else if (f === 'microsocks' && !microsocksBin) skipped[f] = 'microsocks not on PATH (apt-get install microsocks)';
  else if (f === 'dante' && !danteBin) skipped[f] = 'danted not on PATH (apt-get install dante-server)';
  else return true;
  return false;
}).flatMap((f) => (isSplicer(f) && (workerLevels.length > 1 || workerLevels[0] !== 1)
  ? workerLevels.map((w) => (workerLevels.length > 1 ? `${f}-w${w}` : f))
  : [f]));

/** A row's splicer flags, engine and worker count: splice-w2 → { flags: ['--engine', 'splice'], engine: 'splice', workers: 2 }; null for others. */
function splicerRow(name) {
  const m = /^(.+?)(?:-w(\d+))?$/.exec(name);
  if (!m || !isSplicer(m[1])) return null;
  const flags = SPLICER_ROWS[m[1]];
  return { flags, engine: flags[flags.indexOf('--engine') + 1], workers: m[2] ? Number(m[2]) : workerLevels[0], metrics: m[1] === 'splice-metrics' };
}
for (const [f, why] of Object.entries(skipped)) log(`skipping ${f}: ${why}`);

// ---------------------------------------------------------------------------------------------
// The load driver: bench/socksload.c, compiled once per source version into .bench-out/.

function buildDriver() {
  const cc = which('cc');
  if (!cc) throw new Error('cc not on PATH: the load driver bench/socksload.c cannot be built');
  return { bin: compileC(cc, 'socksload'), cc };
}

let driverBin;
let ccBin;
try {
  ({ bin: driverBin, cc: ccBin } = buildDriver());
} catch (err) {
  log(err.message);
  process.exit(2);
}

async function startDriver() {
  const cp = spawnChild(driverBin, []);
  const ready = JSON.parse(await waitLine(cp, (l) => l.startsWith('{"type":"ready"'), 10000, 'load driver ready'));
  return { cp, rrPort: ready.rrPort, sinkPort: ready.sinkPort };
}

/** Sends one command to the driver and resolves with its result line (parsed). */
async function driverCommand(driver, cmd, type, ms) {
  const line = waitLine(driver.cp, (l) => l.startsWith(`{"type":"${type}"`), ms, `${type} result`);
  driver.cp.stdin.write(JSON.stringify(cmd) + '\n');
  return JSON.parse(await line);
}

// ---------------------------------------------------------------------------------------------
// Servers

function danteConfig(dir, port) {
  // Foreground (no -D); clientmethod/socksmethod none: no authentication at either level.
  // user.*: root is needed to start as root; the unprivileged user is what Dante drops to.
  const isRoot = process.getuid?.() === 0;
  return `logoutput: ${path.join(dir, 'danted.log')}
internal: ${HOST} port = ${port}
external: ${HOST}
clientmethod: none
socksmethod: none
${isRoot ? 'user.privileged: root\nuser.unprivileged: nobody\n' : ''}client pass {
  from: 127.0.0.0/8 to: 127.0.0.0/8
}
socks pass {
  from: 127.0.0.0/8 to: 127.0.0.0/8
  command: connect
}
`;
}

async function startServer(name, driver, verbose, held = 0) {
  if (name === 'direct') return { name, port: driver.rrPort, cp: null };
  const port = await freePort();
  const splicer = splicerRow(name);
  if (splicer) {
    const extra = openCount + held;
    const limits = extra > 0 ? ['--max-connections', String(extra + 10000), '--max-per-client', String(extra + 5000)] : [];
    const metricsPort = splicer.metrics ? await freePort() : undefined;
    const metrics = metricsPort ? ['--metrics', `${HOST}:${metricsPort}`] : [];
    const cli = name.startsWith('base') ? baseCli : cliJs;
    const cp = spawnChild(process.execPath, [cli, 'proxy', '--listen', `${HOST}:${port}`, ...splicer.flags,
      '--log-level', verbose ? 'info' : 'silent', '--grace', '0', '--workers', String(splicer.workers), ...limits, ...metrics]);
    await waitListening(port, cp, 15000);
    // Worker 0 listens first: wait until every worker holds its socket, or the first ones take all the load.
    if (splicer.workers > 1) await waitWorkersListening(cp, port, splicer.workers, 30000);
    const scraper = metricsPort ? scrapeEverySecond(metricsPort) : undefined;
    return { name, port, cp, scraper };
  }
  if (name === 'microsocks') {
    const cp = spawnChild(microsocksBin, ['-i', HOST, '-p', String(port)]);
    await waitListening(port, cp);
    return { name, port, cp };
  }
  if (name === 'dante') {
    const dir = mkdtempSync(path.join(tmpdir(), 'splicer-bench-dante-'));
    const cfg = path.join(dir, 'danted.conf');
    writeFileSync(cfg, danteConfig(dir, port));
    const cp = spawnChild(danteBin, ['-f', cfg, '-N', '1', '-p', path.join(dir, 'danted.pid')]);
    try {
      await waitListening(port, cp);
    } catch (err) {
      let logText = '';
      try { logText = readFileSync(path.join(dir, 'danted.log'), 'utf8').trim().slice(-800); } catch { /* none */ }
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`${err.message}${logText ? ` (danted.log: ${logText})` : ''}`);
    }
    return { name, port, cp, dir };
  }
  throw new Error(`unknown server ${name}`);
}

/** Resolves once `n` descendants of the supervisor each hold a socket listening on `port` (/proc). */
async function waitWorkersListening(cp, port, n, ms) {
  const deadline = Date.now() + ms;
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (;;) {
    const listening = new Set(readFileSync('/proc/net/tcp', 'utf8').split('\n').map((l) => l.trim().split(/\s+/))
      .filter((f) => f[1]?.endsWith(hex) && f[3] === '0A').map((f) => f[9]));
    let holders = 0;
    for (const pid of childPids(cp.pid)) {
      try {
        const fds = readdirSync(`/proc/${pid}/fd`);
        if (fds.some((fd) => { try { return listening.has(readlinkSync(`/proc/${pid}/fd/${fd}`).slice(8, -1)); } catch { return false; } })) holders++;
      } catch { /* gone */ }
    }
    if (holders >= n) return;
    if (Date.now() > deadline) throw new Error(`${holders}/${n} workers listening on ${port} after ${ms / 1000} s`);
    await sleep(50);
  }
}

/** GET /metrics once a second, as Prometheus would, until stopped; counts the scrapes that answered 200. */
function scrapeEverySecond(port) {
  const state = { scrapes: 0, failures: 0 };
  const once = () => {
    const req = http.get({ host: HOST, port, path: '/metrics', agent: false, timeout: 5000 }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? state.scrapes++ : state.failures++));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => state.failures++);
  };
  const timer = setInterval(once, 1000);
  once();
  return { state, stop: () => clearInterval(timer) };
}

async function stopServer(srv) {
  if (!srv) return;
  srv.scraper?.stop();
  await stopChild(srv.cp, 3000);
  if (srv.dir) rmSync(srv.dir, { recursive: true, force: true });
}

/** CPU seconds of pid and all its live descendants (each utime+stime+cutime+cstime). */
function treeCpuSeconds(pid) {
  let total = 0;
  const seen = new Set();
  const stack = [pid];
  while (stack.length) {
    const p = stack.pop();
    if (seen.has(p)) continue;
    seen.add(p);
    try { total += cpuSeconds(p); } catch { /* gone */ }
    stack.push(...childPids(p));
  }
  return total;
}

/**
 * Steal seconds of the machine (/proc/stat field 8, all CPUs): time the hypervisor ran something else
 * while a virtual CPU of ours wanted to run. On a VM, a busy neighbour shows here.
 */
function machineStealSeconds() {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith('cpu '));
    return Number(line.trim().split(/\s+/)[8] ?? 0) / clockTicks();
  } catch { return 0; }
}

/** Processes in the tree (Dante forks as it goes). */
function treeSize(pid) {
  let n = 0;
  const stack = [pid];
  while (stack.length) { const p = stack.pop(); n++; stack.push(...childPids(p)); }
  return n;
}

function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => { t = setTimeout(() => reject(new Error(`${what}: timeout after ${ms / 1000} s`)), ms); }),
  ]).finally(() => clearTimeout(t));
}

/** splicer proxy at info level: its `connection closed` records since line index `from`. */
function closedRecords(srv, from) {
  const out = [];
  for (const l of srv.cp.lines.slice(from)) {
    if (!l.startsWith('{')) continue;
    try {
      const r = JSON.parse(l);
      if (r.msg === 'connection closed') out.push(r);
    } catch { /* not JSON */ }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Measurements

/** Opens `n` SOCKS5 CONNECTs through the proxy to an idle target of our own; close() ends them all. */
async function holdOpen(port, n) {
  const held = new Set();
  const target = net.createServer((s) => { held.add(s); s.on('error', () => {}); });
  await new Promise((resolve, reject) => target.once('error', reject).listen(0, HOST, resolve));
  const tp = target.address().port;
  const request = Buffer.from([5, 1, 0, 1, 127, 0, 0, 1, tp >> 8, tp & 255]);
  const one = () => new Promise((resolve, reject) => {
    const s = net.connect({ host: HOST, port });
    held.add(s);
    const timer = setTimeout(() => reject(new Error('an idle connection got no SOCKS5 reply within 10 s')), 10000);
    s.once('error', (err) => { clearTimeout(timer); reject(err); });
    let got = 0;
    s.on('data', function onData(d) {
      got += d.length;
      if (got === 2) s.write(request);
      else if (got >= 12) {
        s.off('data', onData);
        clearTimeout(timer);
        s.on('error', () => {});
        resolve();
      }
    });
    s.once('connect', () => s.write(Buffer.from([5, 1, 0])));
  });
  const close = () => {
    for (const s of held) s.destroy();
    target.close();
  };
  try {
    for (let i = 0; i < n; i += 100) await Promise.all(Array.from({ length: Math.min(100, n - i) }, one));
  } catch (err) {
    close();
    throw err;
  }
  return { close };
}

async function measureConn(name, clients) {
  let driver;
  let srv;
  let open;
  const started = Date.now();
  try {
    driver = await startDriver();
    srv = await startServer(name, driver, false);
    const socks = name === 'direct' ? 0 : 1;
    const perRunMs = (maxSeconds + CONN_TIMEOUT_S + 10) * 1000;
    if (warmup > 0) {
      const w = await driverCommand(driver, { cmd: 'rate', port: srv.port, socks, clients, count: Math.max(warmup, clients), seconds: maxSeconds, size, timeout: CONN_TIMEOUT_S }, 'rate', perRunMs);
      if (w.done === 0) throw new Error(`warm-up failed: ${w.firstError ?? w.error ?? 'no connection done'}`);
    }
    if (openCount > 0 && socks) open = await holdOpen(srv.port, openCount);
    await sleep(100);
    const pid = srv.cp?.pid;
    const cpu0 = pid ? treeCpuSeconds(pid) : null;
    const load0 = cpuSeconds(driver.cp.pid);
    const m0 = machineBusySeconds();
    const st0 = machineStealSeconds();
    const r = await driverCommand(driver, { cmd: 'rate', port: srv.port, socks, clients, count, seconds: maxSeconds, size, timeout: CONN_TIMEOUT_S }, 'rate', perRunMs);
    await sleep(100); // let the proxy finish closing (its CPU for the last connections)
    const cpu1 = pid ? treeCpuSeconds(pid) : null;
    const load1 = cpuSeconds(driver.cp.pid);
    const m1 = machineBusySeconds();
    const st1 = machineStealSeconds();
    const cpuSec = pid ? cpu1 - cpu0 : null;
    return {
      test: 'conn', server: name, clients,
      ok: r.ok, done: r.done, errors: r.errors, started: r.started, seconds: r.seconds, connsPerSec: r.done > 0 ? r.connsPerSec : null,
      p50Ms: r.latencyUs ? r.latencyUs.p50 / 1000 : null,
      p90Ms: r.latencyUs ? r.latencyUs.p90 / 1000 : null,
      p99Ms: r.latencyUs ? r.latencyUs.p99 / 1000 : null,
      maxMs: r.latencyUs ? r.latencyUs.max / 1000 : null,
      meanMs: r.latencyUs ? r.latencyUs.mean / 1000 : null,
      handshakeP50Ms: r.handshakeUs ? r.handshakeUs.p50 / 1000 : null,
      handshakeP99Ms: r.handshakeUs ? r.handshakeUs.p99 / 1000 : null,
      cpuSec,
      cpuUsPerConn: cpuSec !== null && r.done > 0 ? cpuSec / r.done * 1e6 : null,
      loadCpuSec: load1 - load0,
      machineCpuSec: m1 - m0,
      // Busy CPU of the machine not charged to the proxy or the driver: other work running meanwhile (a
      // noisy neighbour shows here; a few hundredths are kernel threads and this script).
      stealSec: st1 - st0,
      otherCpuSec: (m1 - m0) + (st1 - st0) - (cpuSec ?? 0) - (load1 - load0),
      processes: pid ? treeSize(pid) : null,
      error: r.ok ? null : (r.firstError ?? r.error ?? (r.done < count ? `${r.done}/${count} done in ${maxSeconds} s` : null)),
      ...(r.done < count && r.ok ? { truncated: true } : {}),
    };
  } catch (err) {
    return { test: 'conn', server: name, clients, ok: false, error: err.message, wallSeconds: (Date.now() - started) / 1000 };
  } finally {
    open?.close();
    await stopServer(srv).catch(() => {});
    await stopChild(driver?.cp).catch(() => {});
  }
}

async function measureBulk(name, streams) {
  let driver;
  let srv;
  const started = Date.now();
  try {
    driver = await startDriver();
    // splicer at info level: one `connection closed` record per pair, to check engine and bytes.
    const verbose = splicerRow(name) !== null;
    srv = await startServer(name, driver, verbose);
    const socks = name === 'direct' ? 0 : 1;
    if (warmupBytes > 0) {
      const wb = Math.max(Math.min(warmupBytes, totalBytes), streams);
      const w = await driverCommand(driver, { cmd: 'bulk', port: srv.port, socks, streams, bytes: wb }, 'bulk', timeoutMs);
      if (!w.ok) throw new Error(`warm-up failed: ${w.error}`);
    }
    await sleep(100);
    const linesBefore = srv.cp ? srv.cp.lines.length : 0;
    const pid = srv.cp?.pid;
    const cpu0 = pid ? treeCpuSeconds(pid) : null;
    const load0 = cpuSeconds(driver.cp.pid);
    const m0 = machineBusySeconds();
    const st0 = machineStealSeconds();
    const r = await driverCommand(driver, { cmd: 'bulk', port: srv.port, socks, streams, bytes: totalBytes }, 'bulk', timeoutMs);
    // Settle: splicer until it has reported every pair; the others a moment to close.
    let recs = [];
    if (verbose) {
      const deadline = Date.now() + 10000;
      while (Date.now() < deadline) {
        recs = closedRecords(srv, linesBefore);
        if (recs.length >= streams) break;
        await sleep(10);
      }
    } else {
      await sleep(200);
    }
    const cpu1 = pid ? treeCpuSeconds(pid) : null;
    const load1 = cpuSeconds(driver.cp.pid);
    const m1 = machineBusySeconds();
    const st1 = machineStealSeconds();
    const out = {
      test: 'bulk', server: name, streams,
      ok: r.ok, bytes: r.bytes, expected: r.expected, seconds: r.seconds,
      gbps: r.ok ? r.bytes / r.seconds / 1e9 : null,
      cpuSec: pid ? cpu1 - cpu0 : null,
      loadCpuSec: load1 - load0,
      machineCpuSec: m1 - m0,
      stealSec: st1 - st0,
      otherCpuSec: (m1 - m0) + (st1 - st0) - (pid ? cpu1 - cpu0 : 0) - (load1 - load0),
      processes: pid ? treeSize(pid) : null,
      error: r.error ?? null,
    };
    out.cpuPerGiB = out.ok && out.cpuSec !== null ? out.cpuSec / (r.bytes / GiB) : null;
    out.machineCpuPerGiB = out.ok ? out.machineCpuSec / (r.bytes / GiB) : null;
    if (verbose) {
      const problems = [];
      if (recs.length < streams) problems.push(`${recs.length}/${streams} connection records`);
      const wrong = recs.filter((x) => x.engine !== splicerRow(name).engine);
      if (wrong.length) problems.push(`${wrong.length} pairs used engine ${wrong[0].engine ?? '(none)'} (outcome ${wrong[0].outcome})`);
      const sum = recs.reduce((s, x) => s + (x.bytesUp || 0), 0);
      if (recs.length >= streams && sum !== totalBytes) problems.push(`proxy reported ${sum} bytes up, expected ${totalBytes}`);
      out.engines = [...new Set(recs.map((x) => x.engine).filter(Boolean))];
      out.outcomes = [...new Set(recs.map((x) => x.outcome))];
      if (problems.length) {
        out.ok = false;
        out.error = [out.error, ...problems].filter(Boolean).join('; ');
      }
    }
    return out;
  } catch (err) {
    return { test: 'bulk', server: name, streams, ok: false, error: err.message, wallSeconds: (Date.now() - started) / 1000 };
  } finally {
    await stopServer(srv).catch(() => {});
    await stopChild(driver?.cp).catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Held tunnels: idle memory, C10K, fd hygiene

/** The hard RLIMIT_NOFILE of a process ('self' or a pid), from /proc/<pid>/limits. */
function hardNofile(pid) {
  try {
    const line = readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const hard = line.trim().split(/\s+/)[4];
    return hard === 'unlimited' ? 1 << 20 : Number(hard);
  } catch { return 1024; }
}

/** Raises the soft RLIMIT_NOFILE of every process of the tree to its hard limit (prlimit). */
function raiseNofile(pid) {
  const prlimit = which('prlimit');
  if (!prlimit) throw new Error('prlimit not on PATH (util-linux): cannot raise the server\'s fd limit');
  for (const p of treePids(pid)) {
    const hard = hardNofile(p);
    try { execFileSync(prlimit, ['--pid', String(p), `--nofile=${hard}:${hard}`], { stdio: 'ignore', timeout: 5000 }); } catch { /* gone */ }
  }
}

/** VmRSS, its anonymous part (RssAnon) and Pss (bytes) summed over the process tree. */
function treeMemory(pid) {
  let rss = 0;
  let anon = 0;
  let pss = 0;
  for (const p of treePids(pid)) {
    try {
      const status = readFileSync(`/proc/${p}/status`, 'utf8');
      const m = /VmRSS:\s+(\d+) kB/.exec(status);
      if (m) rss += Number(m[1]) * 1024;
      const a = /RssAnon:\s+(\d+) kB/.exec(status);
      if (a) anon += Number(a[1]) * 1024;
      const q = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${p}/smaps_rollup`, 'utf8'));
      if (q) pss += Number(q[1]) * 1024;
    } catch { /* gone */ }
  }
  return { rss, anon, pss };
}

/** Open fds of the process tree (/proc/<pid>/fd entries). */
function treeFds(pid) {
  let n = 0;
  for (const p of treePids(pid)) {
    try { n += readdirSync(`/proc/${p}/fd`).length; } catch { /* gone */ }
  }
  return n;
}

/**
 * The tree's fds that are TCP sockets (their inodes in /proc/net/tcp and tcp6): the connections it
 * holds, whatever its pool of helper processes (Dante keeps the children it forked, each with its
 * own fds, for a while) holds besides.
 */
function treeTcpFds(pid) {
  const inodes = new Set();
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    try {
      for (const line of readFileSync(f, 'utf8').split('\n').slice(1)) {
        const inode = line.trim().split(/\s+/)[9];
        if (inode && inode !== '0') inodes.add(inode);
      }
    } catch { /* none */ }
  }
  let n = 0;
  for (const p of treePids(pid)) {
    let fds = [];
    try { fds = readdirSync(`/proc/${p}/fd`); } catch { continue; }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${p}/fd/${fd}`));
        if (m && inodes.has(m[1])) n++;
      } catch { /* closed meanwhile */ }
    }
  }
  return n;
}

/** The machine's kernel memory that held tunnels add to: TCP socket buffers (sockstat) and slab (meminfo), bytes. */
function kernelMemory() {
  let tcp = null;
  let slab = null;
  try {
    const m = /^TCP:.* mem (\d+)/m.exec(readFileSync('/proc/net/sockstat', 'utf8'));
    if (m) tcp = Number(m[1]) * 4096;
  } catch { /* none */ }
  try {
    const m = /^Slab:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m) slab = Number(m[1]) * 1024;
  } catch { /* none */ }
  return { tcp, slab };
}

/** Waits until the tree's fd count is at most `target` (or the time is up); the last count. */
async function fdsBackTo(pid, target, ms) {
  const deadline = Date.now() + ms;
  let n = treeFds(pid);
  while (n > target && Date.now() < deadline) {
    await sleep(100);
    n = treeFds(pid);
  }
  return n;
}

const HOLD_PARALLEL = 100; // handshakes in flight while the tunnels are opened
const HOLD_TIMEOUT_S = 180;

/** A fresh server with its fd limit raised, warmed up by a few short connections: { driver, srv, pid }. */
async function startHeldServer(name, warm) {
  const driver = await startDriver();
  let srv;
  try {
    srv = await startServer(name, driver, false, tunnels);
    const pid = srv.cp.pid;
    raiseNofile(pid);
    if (warm > 0) {
      const w = await driverCommand(driver, { cmd: 'rate', port: srv.port, socks: 1, clients: Math.min(16, warm), count: warm, seconds: 60, size, timeout: CONN_TIMEOUT_S }, 'rate', 90000);
      if (w.done === 0) throw new Error(`warm-up failed: ${w.firstError ?? w.error ?? 'no connection done'}`);
    }
    return { driver, srv, pid };
  } catch (err) {
    await stopServer(srv).catch(() => {});
    await stopChild(driver.cp).catch(() => {});
    throw err;
  }
}

async function holdTunnels(driver, srv) {
  const h = await driverCommand(driver, { cmd: 'hold', port: srv.port, count: tunnels, clients: HOLD_PARALLEL, timeout: HOLD_TIMEOUT_S }, 'hold', (HOLD_TIMEOUT_S + 30) * 1000);
  if (h.open === 0) throw new Error(`no tunnel opened: ${h.firstError ?? h.error ?? 'unknown'}`);
  return h;
}

async function measureIdle(name) {
  let ctx;
  const started = Date.now();
  try {
    ctx = await startHeldServer(name, 200);
    const { driver, srv, pid } = ctx;
    // The same rest before both measurements: a garbage-collected heap gives memory back only once
    // its owner has been quiet for a while (V8's memory reducer: seconds after the last major GC).
    await sleep(idleSeconds * 1000);
    const fdBefore = treeFds(pid);
    const tcpFdBefore = treeTcpFds(pid);
    const processesBefore = treeSize(pid);
    const mem0 = treeMemory(pid);
    const k0 = kernelMemory();
    const h = await holdTunnels(driver, srv);
    await sleep(idleSeconds * 1000);
    const mem1 = treeMemory(pid);
    const k1 = kernelMemory();
    const fdHeld = treeFds(pid);
    const processes = treeSize(pid);
    const c = await driverCommand(driver, { cmd: 'close' }, 'close', 60000);
    const fdAfter = await fdsBackTo(pid, fdBefore, 20000);
    const tcpFdAfter = treeTcpFds(pid);
    const processesAfter = treeSize(pid);
    const mem2 = treeMemory(pid);
    const n = h.open;
    const per = (a, b) => (a === null || b === null ? null : (b - a) / n);
    return {
      test: 'idle', server: name,
      // A server that forks (Dante) keeps a pool of children, each with fds of its own: its TCP sockets are what must come back.
      ok: h.ok && c.lost === 0 && tcpFdAfter <= tcpFdBefore && (processesAfter > processesBefore || fdAfter <= fdBefore),
      tunnels: n, wanted: tunnels, openSeconds: h.seconds, holdErrors: h.errors, lost: c.lost,
      rssBefore: mem0.rss, rssHeld: mem1.rss, rssClosed: mem2.rss,
      bytesPerTunnel: per(mem0.rss, mem1.rss),
      anonBytesPerTunnel: per(mem0.anon, mem1.anon),
      pssBytesPerTunnel: per(mem0.pss, mem1.pss),
      kernelTcpBytesPerTunnel: per(k0.tcp, k1.tcp),
      kernelSlabBytesPerTunnel: per(k0.slab, k1.slab),
      fdBefore, fdHeld, fdAfter, tcpFdBefore, tcpFdAfter, processes, processesBefore, processesAfter,
      error: [h.ok ? null : `${h.open}/${tunnels} tunnels opened (${h.errors} failed: ${h.firstError ?? h.error})`,
        c.lost ? `${c.lost} tunnels closed by the proxy while idle` : null,
        tcpFdAfter > tcpFdBefore ? `${tcpFdAfter} TCP fds after closing, ${tcpFdBefore} before` : null,
        fdAfter > fdBefore && processesAfter <= processesBefore ? `fd count ${fdAfter} after closing, ${fdBefore} before` : null].filter(Boolean).join('; ') || null,
    };
  } catch (err) {
    return { test: 'idle', server: name, ok: false, error: err.message, wallSeconds: (Date.now() - started) / 1000 };
  } finally {
    await stopServer(ctx?.srv).catch(() => {});
    await stopChild(ctx?.driver.cp).catch(() => {});
  }
}

async function measureC10k(name) {
  let ctx;
  const started = Date.now();
  try {
    ctx = await startHeldServer(name, 200);
    const { driver, srv, pid } = ctx;
    const h = await holdTunnels(driver, srv);
    await sleep(500);
    const cpu0 = treeCpuSeconds(pid);
    const load0 = cpuSeconds(driver.cp.pid);
    const m0 = machineBusySeconds();
    const st0 = machineStealSeconds();
    const e = await driverCommand(driver, { cmd: 'echo', seconds: echoSeconds, size: 1024, interval: 1, timeout: 5 }, 'echo', (echoSeconds + 60) * 1000);
    const cpu1 = treeCpuSeconds(pid);
    const load1 = cpuSeconds(driver.cp.pid);
    const m1 = machineBusySeconds();
    const st1 = machineStealSeconds();
    const mem = treeMemory(pid);
    const processes = treeSize(pid);
    await driverCommand(driver, { cmd: 'close' }, 'close', 60000);
    const failures = (tunnels - h.open) + e.failures;
    return {
      test: 'c10k', server: name,
      ok: failures === 0 && e.ok,
      tunnels: h.open, wanted: tunnels, echoes: e.echoes, turns: e.turns, failures, late: e.late, seconds: e.seconds,
      p50Ms: e.latencyUs ? e.latencyUs.p50 / 1000 : null,
      p99Ms: e.latencyUs ? e.latencyUs.p99 / 1000 : null,
      maxMs: e.latencyUs ? e.latencyUs.max / 1000 : null,
      cpuSec: cpu1 - cpu0,
      cpuPercent: (cpu1 - cpu0) / e.seconds * 100,
      // The driver's CPU, and other processes' and the hypervisor's (as in conn): echo latency here is
      // mostly queueing for a CPU when the machine is busy.
      loadCpuPercent: (load1 - load0) / e.seconds * 100,
      otherCpuPercent: ((m1 - m0) + (st1 - st0) - (cpu1 - cpu0) - (load1 - load0)) / e.seconds * 100,
      rss: mem.rss, pss: mem.pss, processes,
      error: failures ? `${failures} failed tunnels: ${h.firstError ?? e.firstError ?? ''}` : (e.ok ? null : e.error ?? 'no echo'),
    };
  } catch (err) {
    return { test: 'c10k', server: name, ok: false, error: err.message, wallSeconds: (Date.now() - started) / 1000 };
  } finally {
    await stopServer(ctx?.srv).catch(() => {});
    await stopChild(ctx?.driver.cp).catch(() => {});
  }
}

async function measureFds(name) {
  let driver;
  let srv;
  const started = Date.now();
  try {
    driver = await startDriver();
    srv = await startServer(name, driver, false);
    const pid = srv.cp.pid;
    const fdFresh = treeFds(pid);
    if (warmup > 0) await driverCommand(driver, { cmd: 'rate', port: srv.port, socks: 1, clients: 64, count: Math.max(warmup, 64), seconds: maxSeconds, size, timeout: CONN_TIMEOUT_S }, 'rate', (maxSeconds + 30) * 1000);
    const fdBefore = await fdsBackTo(pid, fdFresh, 5000);
    const tcpFdBefore = treeTcpFds(pid);
    const processesBefore = treeSize(pid);
    const r = await driverCommand(driver, { cmd: 'rate', port: srv.port, socks: 1, clients: 64, count: fdCount, seconds: fdSeconds, size, timeout: CONN_TIMEOUT_S }, 'rate', (fdSeconds + 60) * 1000);
    const fdAfter = await fdsBackTo(pid, fdBefore, 10000);
    const tcpFdAfter = treeTcpFds(pid);
    const processesAfter = treeSize(pid);
    return {
      test: 'fds', server: name,
      ok: r.done === fdCount && tcpFdAfter <= tcpFdBefore && (processesAfter > processesBefore || fdAfter <= fdBefore),
      done: r.done, errors: r.errors, wanted: fdCount, seconds: r.seconds, connsPerSec: r.connsPerSec,
      fdFresh, fdBefore, fdAfter, tcpFdBefore, tcpFdAfter, processesBefore, processesAfter,
      error: [r.done < fdCount ? `${r.done}/${fdCount} connections done (${r.errors} failed${r.firstError ? `: ${r.firstError}` : ''})` : null,
        tcpFdAfter > tcpFdBefore ? `${tcpFdAfter} TCP fds after, ${tcpFdBefore} before` : null,
        fdAfter > fdBefore && processesAfter <= processesBefore ? `fd count ${fdAfter} after, ${fdBefore} before` : null].filter(Boolean).join('; ') || null,
    };
  } catch (err) {
    return { test: 'fds', server: name, ok: false, error: err.message, wallSeconds: (Date.now() - started) / 1000 };
  } finally {
    await stopServer(srv).catch(() => {});
    await stopChild(driver?.cp).catch(() => {});
  }
}

const HELD_TESTS = {
  idle: { measure: measureIdle, timeoutMs: () => (HOLD_TIMEOUT_S + idleSeconds + 180) * 1000 },
  c10k: { measure: measureC10k, timeoutMs: () => (HOLD_TIMEOUT_S + echoSeconds + 240) * 1000 },
  fds: { measure: measureFds, timeoutMs: () => (fdSeconds + maxSeconds + 180) * 1000 },
};

function logHeld(r) {
  const f = (v, d = 0) => fmt(v, d);
  if (r.test === 'idle') {
    return `run ${r.run} idle ${r.server}: ${r.tunnels ?? 0} tunnels, ${f(r.bytesPerTunnel)} B/tunnel user space (anonymous ${f(r.anonBytesPerTunnel)}, Pss ${f(r.pssBytesPerTunnel)}), kernel TCP ${f(r.kernelTcpBytesPerTunnel)} B, slab ${f(r.kernelSlabBytesPerTunnel)} B; fds ${r.fdBefore} → ${r.fdHeld} → ${r.fdAfter} (TCP ${r.tcpFdBefore} → ${r.tcpFdAfter}, processes ${r.processesBefore} → ${r.processesAfter})${r.ok ? '' : `, FAILED: ${r.error}`}`;
  }
  if (r.test === 'c10k') {
    return `run ${r.run} c10k ${r.server}: ${r.tunnels ?? 0} tunnels, ${r.echoes ?? 0} echoes, ${r.failures ?? '?'} failures, p50 ${f(r.p50Ms, 3)} ms, p99 ${f(r.p99Ms, 3)} ms, CPU ${f(r.cpuPercent, 1)}% of a core (driver ${f(r.loadCpuPercent, 1)}%, other processes ${f(r.otherCpuPercent, 1)}%), RSS ${f((r.rss ?? NaN) / 2 ** 20, 1)} MiB${r.ok ? '' : `, FAILED: ${r.error}`}`;
  }
  return `run ${r.run} fds ${r.server}: ${r.done ?? 0} connections (${r.errors ?? 0} errors) at ${f(r.connsPerSec)} conn/s; fds fresh ${r.fdFresh}, before ${r.fdBefore}, after ${r.fdAfter} (TCP ${r.tcpFdBefore} → ${r.tcpFdAfter}, processes ${r.processesBefore} → ${r.processesAfter})${r.ok ? '' : `, FAILED: ${r.error}`}`;
}

const HELD_METRICS = {
  idle: ['tunnels', 'bytesPerTunnel', 'anonBytesPerTunnel', 'pssBytesPerTunnel', 'kernelTcpBytesPerTunnel', 'kernelSlabBytesPerTunnel', 'rssBefore', 'rssHeld', 'fdBefore', 'fdHeld', 'fdAfter', 'tcpFdBefore', 'tcpFdAfter', 'processesBefore', 'processesAfter'],
  c10k: ['tunnels', 'echoes', 'failures', 'p50Ms', 'p99Ms', 'maxMs', 'cpuPercent', 'loadCpuPercent', 'otherCpuPercent', 'rss', 'pss', 'processes'],
  fds: ['done', 'errors', 'connsPerSec', 'fdFresh', 'fdBefore', 'fdAfter', 'tcpFdBefore', 'tcpFdAfter', 'processesBefore', 'processesAfter'],
};

/** Medians per server of the held-tunnel tests, and the worst fd count after (a leak in any run shows). */
function summarizeHeld(all) {
  const out = {};
  for (const test of Object.keys(HELD_TESTS)) {
    if (!tests.includes(test)) continue;
    out[test] = servers.filter((s) => s !== 'direct').map((s) => {
      const rs = all.filter((r) => r.test === test && r.server === s);
      const good = rs.filter((r) => r.tunnels > 0 || r.done > 0);
      const row = { server: s, runs: rs.length, failed: rs.filter((r) => !r.ok).length };
      for (const m of HELD_METRICS[test]) row[m] = median(good.map((r) => r[m]));
      if (test !== 'c10k') row.fdAfterMax = good.length ? Math.max(...good.map((r) => r.fdAfter - r.fdBefore)) : null;
      if (test === 'c10k') row.failuresTotal = rs.reduce((n, r) => n + (r.failures ?? 0), 0);
      row.errors_ = [...new Set(rs.filter((r) => !r.ok).map((r) => r.error))];
      return row;
    });
  }
  return out;
}

function printHeldTables(held) {
  const out = [];
  const med = runs > 1 ? `, medians of ${runs} runs` : '';
  const mib = (b) => fmt(b / 2 ** 20, 1);
  const fail = (r) => (r.failed ? ` (${r.failed}/${r.runs} failed)` : '');
  if (held.idle) {
    out.push('', `### Idle tunnels: memory per tunnel (${tunnels} SOCKS5 tunnels held ${idleSeconds} s, fresh process${med})`, '');
    out.push('| server | tunnels | user-space B/tunnel (RSS) | of it anonymous | Pss B/tunnel | kernel TCP buffers B/tunnel | kernel slab B/tunnel | RSS before MiB | RSS held MiB | fds before | held | after closing | TCP fds before | after | processes before | after |');
    out.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const r of held.idle) {
      out.push(`| ${r.server}${fail(r)} | ${fmt(r.tunnels, 0)} | ${fmt(r.bytesPerTunnel, 0)} | ${fmt(r.anonBytesPerTunnel, 0)} | ${fmt(r.pssBytesPerTunnel, 0)} | ${fmt(r.kernelTcpBytesPerTunnel, 0)} | ${fmt(r.kernelSlabBytesPerTunnel, 0)} | ${mib(r.rssBefore)} | ${mib(r.rssHeld)} | ${fmt(r.fdBefore, 0)} | ${fmt(r.fdHeld, 0)} | ${fmt(r.fdAfter, 0)} | ${fmt(r.tcpFdBefore, 0)} | ${fmt(r.tcpFdAfter, 0)} | ${fmt(r.processesBefore, 0)} | ${fmt(r.processesAfter, 0)} |`);
    }
    out.push('', 'User-space B/tunnel = (VmRSS held - VmRSS before) / tunnels, summed over the server\'s processes (Dante forks: its RSS counts a shared page once per process, Pss does not); anonymous = RssAnon (heap, stacks), the rest is file pages (code) touched meanwhile.');
    out.push('Kernel TCP buffers = the change of `TCP: mem` in /proc/net/sockstat (socket buffer pages of all four sockets of a tunnel, the driver\'s two included); kernel slab = the change of Slab in /proc/meminfo (socket, file and epoll objects, machine-wide).');
    for (const r of held.idle) for (const e of r.errors_) if (e) out.push(`- ${r.server} failure: ${e}`);
  }
  if (held.c10k) {
    out.push('', `### C10K: ${tunnels} tunnels each echo 1 KiB once a second for ${echoSeconds} s${med}`, '');
    out.push('| server | tunnels | echoes | failures | echo p50 ms | p99 ms | max ms | proxy CPU % of a core | driver CPU % | other processes CPU % | proxy RSS MiB |');
    out.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const r of held.c10k) {
      out.push(`| ${r.server}${fail(r)} | ${fmt(r.tunnels, 0)} | ${fmt(r.echoes, 0)} | ${fmt(r.failuresTotal, 0)} | ${fmt(r.p50Ms, 3)} | ${fmt(r.p99Ms, 3)} | ${fmt(r.maxMs, 1)} | ${fmt(r.cpuPercent, 1)} | ${fmt(r.loadCpuPercent, 1)} | ${fmt(r.otherCpuPercent, 1)} | ${mib(r.rss)} |`);
    }
    for (const r of held.c10k) for (const e of r.errors_) if (e) out.push(`- ${r.server} failure: ${e}`);
  }
  if (held.fds) {
    out.push('', `### fd hygiene: ${fdCount} short SOCKS5 connections (64 clients)${med}`, '');
    out.push('| server | connections done | errors | conn/s | fds fresh | fds before | fds after | worst after − before | TCP fds before | after | processes before | after |');
    out.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const r of held.fds) {
      out.push(`| ${r.server}${fail(r)} | ${fmt(r.done, 0)} | ${fmt(r.errors, 0)} | ${fmt(r.connsPerSec, 0)} | ${fmt(r.fdFresh, 0)} | ${fmt(r.fdBefore, 0)} | ${fmt(r.fdAfter, 0)} | ${fmt(r.fdAfterMax, 0)} | ${fmt(r.tcpFdBefore, 0)} | ${fmt(r.tcpFdAfter, 0)} | ${fmt(r.processesBefore, 0)} | ${fmt(r.processesAfter, 0)} |`);
    }
    for (const r of held.fds) for (const e of r.errors_) if (e) out.push(`- ${r.server} failure: ${e}`);
  }
  if (out.length) process.stdout.write(out.join('\n') + '\n');
}

// ---------------------------------------------------------------------------------------------
// Report

function fmt(x, digits = 2) {
  return x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(digits);
}
function ratio(a, b) {
  return a === null || b === null || a === undefined || b === undefined || b === 0 ? null : a / b;
}
const x = (r) => (r === null ? '–' : `×${fmt(r)}`);

const CONN_METRICS = ['connsPerSec', 'p50Ms', 'p90Ms', 'p99Ms', 'maxMs', 'meanMs', 'handshakeP50Ms', 'handshakeP99Ms', 'cpuUsPerConn', 'done', 'errors', 'seconds'];
const BULK_METRICS = ['gbps', 'cpuPerGiB', 'machineCpuPerGiB', 'seconds'];
const REFS = ['microsocks', 'dante'];

function summarize(all) {
  const conn = {};
  const bulk = {};
  const group = (test, key, level, metrics, ratioSpec) => {
    const rows = [];
    for (const s of servers) {
      const rs = all.filter((r) => r.test === test && r.server === s && r[key] === level);
      // conn runs with some failed connections still count (their errors are shown); bulk runs must be whole.
      const good = rs.filter((r) => (test === 'conn' ? r.done > 0 : r.ok));
      const row = { server: s, runs: rs.length, failed: rs.filter((r) => !r.ok).length };
      if (test === 'conn') row.errorsTotal = rs.reduce((n, r) => n + (r.errors ?? 0), 0);
      for (const m of metrics) row[m] = median(good.map((r) => r[m]));
      if (s === 'direct') for (const m of ['cpuUsPerConn', 'cpuPerGiB']) if (m in row) row[m] = null;
      row.errors_ = [...new Set(rs.filter((r) => !r.ok).map((r) => r.error))];
      rows.push(row);
    }
    for (const row of rows) {
      row.vs = {};
      for (const ref of REFS) {
        const refRow = rows.find((r) => r.server === ref);
        row.vs[ref] = {};
        for (const m of ratioSpec) row.vs[ref][m] = row.server === ref ? null : ratio(row[m], refRow?.[m] ?? null);
      }
    }
    return rows;
  };
  if (tests.includes('conn')) for (const c of clientLevels) conn[c] = group('conn', 'clients', c, CONN_METRICS, ['connsPerSec', 'p50Ms', 'p99Ms', 'cpuUsPerConn']);
  if (tests.includes('bulk')) for (const s of streamLevels) bulk[s] = group('bulk', 'streams', s, BULK_METRICS, ['gbps', 'cpuPerGiB']);
  return { conn, bulk };
}

function failNote(r) {
  if (r.errorsTotal) return ` (${r.errorsTotal} failed connections in ${r.failed}/${r.runs} runs)`;
  return r.failed ? ` (${r.failed}/${r.runs} failed)` : '';
}

function ratioBullets(rows, specs) {
  const out = [];
  for (const name of servers.filter((f) => splicerRow(f))) {
    const row = rows.find((r) => r.server === name);
    if (!row) continue;
    for (const ref of REFS) {
      if (!rows.some((r) => r.server === ref)) continue;
      const parts = specs.map(([m, label]) => `${label} ${x(row.vs[ref][m])}`);
      out.push(`- ${name} vs ${ref}: ${parts.join(', ')}`);
    }
  }
  return out;
}

function printTables({ conn, bulk }) {
  const out = [];
  const med = runs > 1 ? `, medians of ${runs} runs` : '';
  for (const c of Object.keys(conn).map(Number)) {
    const rows = conn[c];
    out.push('');
    out.push(`### Connections: ${c} client${c === 1 ? '' : 's'} (${count} connections${c > 1 ? ` split across ${c} clients` : ' in a loop'}, ${size} B request + ${size} B response${openCount ? `, ${openCount} more connections held open` : ''}${med})`);
    out.push('');
    out.push('| server | conn/s | latency p50 ms | p99 ms | SOCKS handshake p50 ms | proxy CPU µs/conn | conn/s vs microsocks | conn/s vs dante | p99 vs microsocks | p99 vs dante |');
    out.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const r of rows) {
      if (r.connsPerSec === null) {
        out.push(`| ${r.server} | FAILED${failNote(r)} | – | – | – | – | – | – | – | – |`);
        continue;
      }
      const hs = r.server === 'direct' ? '–' : fmt(r.handshakeP50Ms, 3);
      out.push(`| ${r.server}${failNote(r)} | ${fmt(r.connsPerSec, 0)} | ${fmt(r.p50Ms, 3)} | ${fmt(r.p99Ms, 3)} | ${hs} | ${fmt(r.cpuUsPerConn, 0)} | ${x(r.vs.microsocks.connsPerSec)} | ${x(r.vs.dante.connsPerSec)} | ${x(r.vs.microsocks.p99Ms)} | ${x(r.vs.dante.p99Ms)} |`);
    }
    const b = ratioBullets(rows, [['connsPerSec', 'conn/s'], ['p50Ms', 'p50 latency'], ['p99Ms', 'p99 latency'], ['cpuUsPerConn', 'CPU per connection']]);
    const withMetrics = rows.find((r) => r.server === 'splice-metrics');
    const without = rows.find((r) => r.server === 'splice');
    if (withMetrics && without) {
      b.push(`- splice-metrics vs splice (the cost of --metrics, scraped every second): conn/s ${x(ratio(withMetrics.connsPerSec, without.connsPerSec))}, ` +
        `p99 latency ${x(ratio(withMetrics.p99Ms, without.p99Ms))}, CPU per connection ${x(ratio(withMetrics.cpuUsPerConn, without.cpuUsPerConn))}`);
    }
    if (b.length) out.push('', ...b);
    for (const r of rows) for (const e of r.errors_) if (e) out.push(`- ${r.server} failure: ${e}`);
  }
  for (const s of Object.keys(bulk).map(Number)) {
    const rows = bulk[s];
    out.push('');
    out.push(`### Bulk: ${s} stream${s === 1 ? '' : 's'} (${gib} GiB one direction${s > 1 ? `, ${fmt(totalBytes / s / 2 ** 20, 0)} MiB each` : ''}${med})`);
    out.push('');
    out.push('| server | GB/s | proxy CPU s/GiB | GB/s vs microsocks | GB/s vs dante | CPU vs microsocks | CPU vs dante |');
    out.push('|---|---:|---:|---:|---:|---:|---:|');
    for (const r of rows) {
      if (r.gbps === null) {
        out.push(`| ${r.server} | FAILED${failNote(r)} | – | – | – | – | – |`);
        continue;
      }
      out.push(`| ${r.server}${failNote(r)} | ${fmt(r.gbps)} | ${fmt(r.cpuPerGiB)} | ${x(r.vs.microsocks.gbps)} | ${x(r.vs.dante.gbps)} | ${x(r.vs.microsocks.cpuPerGiB)} | ${x(r.vs.dante.cpuPerGiB)} |`);
    }
    const b = ratioBullets(rows, [['gbps', 'GB/s'], ['cpuPerGiB', 'CPU per GiB']]);
    if (b.length) out.push('', ...b);
    for (const r of rows) for (const e of r.errors_) if (e) out.push(`- ${r.server} failure: ${e}`);
  }
  out.push('');
  out.push('Ratios are row / reference (conn/s and GB/s: above 1 is better; latency and CPU: below 1 is better).');
  out.push('Latency = connect() start to the last response byte; handshake = connect() start to the SOCKS5 CONNECT reply.');
  out.push('Proxy CPU = utime+stime+cutime+cstime of the proxy and its live descendants (Dante\'s children, splicer\'s workers), /proc.');
  out.push('direct = no proxy (the load driver alone: its ceiling). Load driver: bench/socksload.c (C, 2 epoll threads).');
  for (const [f, why] of Object.entries(skipped)) out.push(`Skipped ${f}: ${why}.`);
  process.stdout.write(out.join('\n') + '\n');
}

function version(bin, args, re = /./) {
  try {
    const text = execFileSync(bin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 5000 });
    return text.split('\n').find((l) => re.test(l))?.trim() ?? null;
  } catch { return null; }
}
function dpkgVersion(pkg) {
  return version('dpkg-query', ['-W', '-f=${Version}\n', pkg]);
}

// ---------------------------------------------------------------------------------------------

async function main() {
  installExitHandlers();
  if (servers.length === 0) {
    log('no server to run');
    process.exit(2);
  }
  const load0 = loadavg();
  log(`proxy bench: servers ${servers.join(',')}; tests ${tests.join(',')}; conn: ${count} per level, clients ${clientLevels.join(',')}, ≤ ${maxSeconds} s, ${size} B${openCount ? `, ${openCount} more held open` : ''}; bulk: ${gib} GiB, streams ${streamLevels.join(',')}; runs ${runs}; load average ${load0.map((v) => v.toFixed(2)).join(' ')}`);
  const all = [];
  const t0 = Date.now();
  for (let run = 1; run <= runs; run++) {
    if (tests.includes('conn')) {
      for (const c of clientLevels) {
        for (const s of servers) {
          const r = await withTimeout(measureConn(s, c), (maxSeconds * 2 + CONN_TIMEOUT_S * 2 + 60) * 1000, `conn ${s} ×${c}`)
            .catch((err) => ({ test: 'conn', server: s, clients: c, ok: false, error: err.message }));
          r.run = run;
          all.push(r);
          log(r.connsPerSec != null
            ? `run ${run} conn ${s} ×${c}: ${fmt(r.connsPerSec, 0)} conn/s (${r.done} in ${fmt(r.seconds, 2)} s${r.errors ? `, ${r.errors} errors` : ''}), p50 ${fmt(r.p50Ms, 3)} ms, p99 ${fmt(r.p99Ms, 3)} ms, proxy CPU ${fmt(r.cpuUsPerConn, 0)} µs/conn, other CPU ${fmt(r.otherCpuSec)} s, steal ${fmt(r.stealSec)} s${r.ok ? '' : `, FAILED: ${r.error}`}`
            : `run ${run} conn ${s} ×${c}: FAILED: ${r.error}`);
        }
      }
    }
    for (const test of Object.keys(HELD_TESTS)) {
      if (!tests.includes(test)) continue;
      for (const s of servers) {
        if (s === 'direct') continue;
        const r = await withTimeout(HELD_TESTS[test].measure(s), HELD_TESTS[test].timeoutMs(), `${test} ${s}`)
          .catch((err) => ({ test, server: s, ok: false, error: err.message }));
        r.run = run;
        all.push(r);
        log(logHeld(r));
      }
    }
    if (tests.includes('bulk')) {
      for (const st of streamLevels) {
        for (const s of servers) {
          const r = await withTimeout(measureBulk(s, st), timeoutMs * 2 + 60000, `bulk ${s} ×${st}`)
            .catch((err) => ({ test: 'bulk', server: s, streams: st, ok: false, error: err.message }));
          r.run = run;
          all.push(r);
          log(r.ok
            ? `run ${run} bulk ${s} ×${st}: ${fmt(r.gbps)} GB/s, ${fmt(r.seconds, 3)} s, proxy CPU ${fmt(r.cpuSec)} s = ${fmt(r.cpuPerGiB)} s/GiB, other CPU ${fmt(r.otherCpuSec)} s, steal ${fmt(r.stealSec)} s${r.engines ? `, engine ${r.engines.join('+')}` : ''}`
            : `run ${run} bulk ${s} ×${st}: FAILED: ${r.error}`);
        }
      }
    }
  }
  const load1 = loadavg();
  const summary = summarize(all);
  const held = summarizeHeld(all);
  printTables(summary);
  printHeldTables(held);
  const sum = (k) => all.reduce((n, r) => n + (Number.isFinite(r[k]) ? r[k] : 0), 0);
  const worst = all.reduce((w, r) => (Number.isFinite(r.otherCpuSec) && r.otherCpuSec > (w?.otherCpuSec ?? -Infinity) ? r : w), null);
  process.stdout.write(`Machine: load average ${load0.map((v) => v.toFixed(2)).join(' ')} at start, ${load1.map((v) => v.toFixed(2)).join(' ')} at end `
    + `(${cpus().length} CPUs); in the measured parts: steal ${fmt(sum('stealSec'))} s in all, other processes' CPU ${fmt(sum('otherCpuSec'))} s in all`
    + `${worst ? ` (most: ${fmt(worst.otherCpuSec)} s, run ${worst.run} ${worst.test} ${worst.server})` : ''}; ${fmt((Date.now() - t0) / 1000, 0)} s wall.\n`);
  // A measurement during which other processes (or the hypervisor) took a noticeable share of the CPU.
  for (const r of all) r.disturbed = Number.isFinite(r.otherCpuSec) && r.otherCpuSec > Math.max(0.2, 0.15 * (r.seconds ?? 0) * cpus().length);
  const disturbed = all.filter((r) => r.disturbed);
  if (disturbed.length) {
    process.stdout.write(`WARNING: ${disturbed.length}/${all.length} measurements ran while other work took CPU (other processes + steal > 15% of the machine): `
      + `${disturbed.map((r) => `run ${r.run} ${r.test} ${r.server} ×${r.clients ?? r.streams} (${fmt(r.otherCpuSec - r.stealSec)} s other processes + ${fmt(r.stealSec)} s steal in ${fmt(r.seconds)} s)`).join(', ')}. `
      + 'Steal is CPU the hypervisor gave to someone else (a busy host), other processes are in this machine. Rerun when the machine is quiet.\n');
  }
  const strip = (groups) => Object.fromEntries(Object.entries(groups).map(([k, rows]) => [k, rows.map(({ errors_, ...r }) => ({ ...r, failures: errors_ }))]));
  const json = {
    meta: {
      date: new Date().toISOString(),
      wallSeconds: (Date.now() - t0) / 1000,
      servers,
      tests,
      conn: { count, clients: clientLevels, maxSeconds, size, warmup, connTimeoutSeconds: CONN_TIMEOUT_S },
      bulk: { gib, bytes: totalBytes, streams: streamLevels, warmupBytes, timeoutSeconds: timeoutMs / 1000 },
      held: { tunnels, nofileHard, idleSeconds, echoSeconds, fdCount, fdSeconds },
      runs,
      workers: workerLevels,
      loadavgStart: load0,
      loadavgEnd: load1,
      git: (() => {
        try {
          const commit = execFileSync('git', ['-C', root, 'rev-parse', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
          const dirty = execFileSync('git', ['-C', root, 'status', '--porcelain', '--', 'src', 'native'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n').filter(Boolean).length;
          return { commit, uncommittedFilesInSrcAndNative: dirty };
        } catch { return null; }
      })(),
      driver: path.relative(root, driverBin),
      cc: version(ccBin, ['--version']),
      node: process.version,
      kernel: release(),
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? null,
      microsocks: microsocksBin ? { path: microsocksBin, version: dpkgVersion('microsocks') } : null,
      dante: danteBin ? { path: danteBin, version: version(danteBin, ['-v'], /Dante/) } : null,
      skipped,
      notes: [
        'conn: connsPerSec = connections done / (first connect() to last connection done); latency = connect() start to last response byte (ms); handshake = connect() start to SOCKS5 reply',
        'conn: cpuUsPerConn = proxy CPU microseconds per connection; proxies run with --log-level silent in conn runs',
        'bulk: gbps = 1e9 bytes per second, first connect to last byte at the target; cpuPerGiB = proxy CPU seconds per GiB',
        'proxy CPU = utime+stime+cutime+cstime of the proxy and its live descendants, from /proc/<pid>/stat',
        'machineCpu* = busy seconds of all CPUs (/proc/stat), includes the load driver and anything else running',
        'stealSec = /proc/stat steal time during the measured part (a VM whose host is busy)',
        'otherCpuSec = machine busy + steal CPU minus proxy and driver CPU during the measured part: roughly, work by other processes (interference); /proc/stat is tick-sampled, so ±0.1 s is noise',
        'vs.<ref>.<metric> = this row / the reference row',
        'dante: danted -f <tmp>/danted.conf -N 1, clientmethod none, socksmethod none, internal/external 127.0.0.1',
        'microsocks: microsocks -i 127.0.0.1 -p P',
        'splice/js rows: dist/cli/main.js proxy --workers N (splice-wN / js-wN when several levels are given); their CPU is the supervisor\'s and every worker\'s',
      ],
    },
    conn: strip(summary.conn),
    bulk: strip(summary.bulk),
    ...strip(held),
    runs: all,
  };
  const text = JSON.stringify(json, null, 2);
  process.stdout.write('\n' + text + '\n');
  if (opt.json) writeFileSync(opt.json, text + '\n');
  process.exitCode = all.some((r) => !r.ok) ? 1 : 0;
}

main().catch((err) => {
  log(`bench failed: ${err.stack || err.message}`);
  process.exitCode = 1;
});
