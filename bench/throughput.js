#!/usr/bin/env node
// Throughput benchmark: N GiB over loopback, sender → forwarder → receiver, one direction, for
// several forwarders, with one stream and with many concurrent streams (total split across them).
//
//   node bench/throughput.js [--gib 2] [--streams 1,64] [--runs 1] [--json FILE]
//                            [--only direct,splice,js,haproxy,haproxy-forced,socat] [--timeout 120]
//                            [--warmup-mib 64] [--load c|node] [--load-threads 2] [--baseline js]
//
// Forwarders (each started fresh for every measurement, warmed with a small transfer first):
//   direct   no forwarder: the receiver is connected to directly (the limit)
//   splice   node bench/forwarder.js --engine splice   (needs dist/ and the native addon)
//   js       node bench/forwarder.js --engine js       (needs dist/)
//   haproxy  haproxy -db, mode tcp, option splice-auto, tune.pipesize 1 MiB, nbthread 1
//   haproxy-forced  the same with option splice-request + splice-response instead of splice-auto:
//            HAProxy 2.6's splice-auto heuristic often never splices on loopback (it then relays with
//            recv/send through 16 KiB buffers); this row shows HAProxy actually splicing.
//            For both, the pipes HAProxy allocated are read from its stats socket (`pipes`).
//   socat    socat TCP-LISTEN:P,bind=127.0.0.1,reuseaddr,fork,backlog=1024 TCP:127.0.0.1:R
//   relay          node dist/cli/main.js relay --listen P --to R: no fault, no recording (spliced)
//   relay-js       the same on the user-space path (--engine js): the path faults and JS recording use
//   relay-record   the same with --record FILE.pcap --record-buffer 256 (both legs; the file is deleted after each run)
//   relay-record-1leg  the same with --record-legs client (the client's connection only)
//   relay-latency  the same with --toxic latency@upstream:latency=1 (user-space path, 1 ms per chunk)
//   toxiproxy      Toxiproxy's server ($TOXIPROXY_SERVER, else toxiproxy-server on PATH), LOG_LEVEL=warn,
//                  one proxy from a -config file, no toxic
//   toxiproxy-latency  the same with a latency toxic of 1 ms on the upstream stream, added over its API
// --baseline NAME picks the row the ratio columns compare with (default js).
// --record-dir DIR puts the relay-record files there (default the system temp dir), e.g. /dev/shm.
// --rate-mb R paces the sender at R MB/s (10^6 bytes) over all streams (C load generator only), to
// compare CPU per GiB at a rate every forwarder sustains (recording to disk, say).
// The sender and the receiver live in their own child process, so the CPU time read from
// /proc/<forwarder pid>/stat (utime+stime+cutime+cstime) is the forwarder's alone:
//   --load c     bench/load.c (the default when `cc` is on PATH): compiled at startup with
//                cc -O2 -pthread into .bench-out/load-<hash of the source>; sender thread and
//                receiver thread, one epoll loop each. Costs far less CPU than Node, which matters
//                on 2 cores where the load generator and the forwarder compete.
//   --load node  bench/load.js (sender on a worker thread, receiver on the main thread, unless
//                --load-threads 1, which applies to it only).
// GB/s is 10^9 bytes per second; CPU is forwarder CPU seconds per GiB moved.
import { parseArgs } from 'node:util';
import { mkdtempSync, writeFileSync, rmSync, existsSync, readFileSync, statSync } from 'node:fs';
import { tmpdir, release, cpus } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import {
  HOST, installExitHandlers, spawnChild, waitLine, stopChild, freePort, waitListening,
  cpuSeconds, childPids, sleep, median, which, machineBusySeconds, threadCpu, compileC,
} from './lib.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, '..');
const GiB = 2 ** 30;
const ALL = ['direct', 'splice', 'js', 'haproxy', 'haproxy-forced', 'socat', 'relay', 'relay-js', 'relay-record', 'relay-record-1leg', 'relay-latency', 'toxiproxy', 'toxiproxy-latency'];
const isHaproxy = (f) => f === 'haproxy' || f === 'haproxy-forced';
const isRelay = (f) => f.startsWith('relay');
const isToxiproxy = (f) => f.startsWith('toxiproxy');
/** What each relay row adds to `splicer relay --listen P --to R`. */
const RELAY_ARGS = {
  relay: () => [],
  'relay-js': () => ['--engine', 'js'],
  'relay-record': (dir) => ['--record', path.join(dir, 'bench.pcap'), '--record-buffer', '256'],
  'relay-record-1leg': (dir) => ['--record', path.join(dir, 'bench.pcap'), '--record-legs', 'client'],
  'relay-latency': () => ['--toxic', 'latency@upstream:latency=1'],
};

// ---------------------------------------------------------------------------------------------
// Options

const { values: opt } = parseArgs({
  options: {
    gib: { type: 'string', default: '2' },
    streams: { type: 'string', default: '1,64' },
    runs: { type: 'string', default: '1' },
    json: { type: 'string' },
    only: { type: 'string' },
    timeout: { type: 'string', default: '120' },
    'warmup-mib': { type: 'string', default: '64' },
    load: { type: 'string' },
    'load-threads': { type: 'string', default: '2' },
    baseline: { type: 'string', default: 'js' },
    'rate-mb': { type: 'string' },
    'record-dir': { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opt.help) {
  const lines = readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1);
  const header = lines.slice(0, lines.findIndex((l) => !l.startsWith('//')));
  process.stdout.write(header.map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
  process.exit(0);
}
const gib = Number(opt.gib);
const streamCounts = opt.streams.split(',').map((s) => Number(s.trim()));
const runs = Number(opt.runs);
const timeoutMs = Number(opt.timeout) * 1000;
const warmupBytes = Math.round(Number(opt['warmup-mib']) * 2 ** 20);
const totalBytes = Math.round(gib * GiB);
if (!(gib > 0) || !(runs >= 1) || !(timeoutMs > 0) || !(warmupBytes >= 0)
    || streamCounts.some((s) => !Number.isInteger(s) || s < 1 || s > 4096)) {
  process.stderr.write('bad option: --gib > 0, --runs >= 1, --streams integers 1..4096, --timeout > 0\n');
  process.exit(2);
}
const loadThreads = opt['load-threads'] === '1' ? '1' : '2';
if (opt.load !== undefined && opt.load !== 'c' && opt.load !== 'node') {
  process.stderr.write('bad option: --load c|node\n');
  process.exit(2);
}
const only = opt.only ? opt.only.split(',').map((s) => s.trim()).filter(Boolean) : ALL;
const baseline = opt.baseline;
const rateBytes = opt['rate-mb'] ? Math.round(Number(opt['rate-mb']) * 1e6) : 0;
if (opt['rate-mb'] && !(rateBytes > 0)) {
  process.stderr.write('bad option: --rate-mb must be a number > 0\n');
  process.exit(2);
}
for (const f of [...only, baseline]) {
  if (!ALL.includes(f)) {
    process.stderr.write(`unknown forwarder in --only: ${f} (known: ${ALL.join(', ')})\n`);
    process.exit(2);
  }
}

function log(msg) {
  process.stderr.write(msg + '\n');
}

// ---------------------------------------------------------------------------------------------
// Which forwarders can run here

const haproxyBin = which('haproxy');
const socatBin = which('socat');
const toxiproxyBin = process.env.TOXIPROXY_SERVER || which('toxiproxy-server');
const distIndex = path.join(root, 'dist', 'index.js');

// ---------------------------------------------------------------------------------------------
// The load generator: bench/load.c compiled once per source version into .bench-out/, else load.js.

const ccBin = which('cc');

/** Path of the compiled bench/load.c, building it if this version of the source is not cached. */
const buildLoadC = () => compileC(ccBin, 'load');

let loadKind = opt.load ?? (ccBin ? 'c' : 'node');
let loadBin = null;
if (loadKind === 'c') {
  try {
    if (!ccBin) throw new Error('cc not on PATH');
    loadBin = buildLoadC();
  } catch (err) {
    if (opt.load === 'c') {
      process.stderr.write(`--load c: ${err.message}\n`);
      process.exit(2);
    }
    log(`load generator: ${err.message}; using bench/load.js`);
    loadKind = 'node';
  }
}
const loadDesc = loadKind === 'c'
  ? `c (${path.relative(root, loadBin)}, 2 threads)`
  : `node (bench/load.js, ${loadThreads} thread${loadThreads === '1' ? '' : 's'})`;
function spawnLoad() {
  return loadKind === 'c'
    ? spawnChild(loadBin, [])
    : spawnChild(process.execPath, [path.join(here, 'load.js'), '--threads', loadThreads]);
}

function firstLine(bin, args) {
  try {
    return execFileSync(bin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).split('\n')[0].trim() || null;
  } catch { return null; }
}

function toolVersion(bin, args) {
  try {
    return execFileSync(bin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).split('\n').find((l) => /version/i.test(l))?.trim() ?? null;
  } catch { return null; }
}

const skipped = {};
const forwarders = only.filter((f) => {
  if ((f === 'splice' || f === 'js' || isRelay(f)) && !existsSync(distIndex)) {
    skipped[f] = 'dist/index.js missing (npx tsc -p tsconfig.build.json)';
  } else if (isHaproxy(f) && !haproxyBin) {
    skipped[f] = 'haproxy not on PATH';
  } else if (f === 'socat' && !socatBin) {
    skipped[f] = 'socat not on PATH';
  } else if (isToxiproxy(f) && !toxiproxyBin) {
    skipped[f] = 'toxiproxy-server not on PATH and $TOXIPROXY_SERVER not set';
  } else return true;
  return false;
});
for (const [f, why] of Object.entries(skipped)) log(`skipping ${f}: ${why}`);

// ---------------------------------------------------------------------------------------------
// Starting forwarders

function haproxyConfig(listenPort, toPort, statsSocket, forced) {
  // nbthread 1: one thread, as splicer's one loop thread, so CPU per GiB compares like with like.
  // tune.pipesize 1048576: 1 MiB pipes, as splicer uses.
  const splice = forced ? 'option splice-request\n    option splice-response' : 'option splice-auto';
  return `global
    nbthread 1
    maxconn 4096
    tune.pipesize 1048576
    stats socket ${statsSocket} mode 600 level user

defaults
    mode tcp
    ${splice}
    timeout connect 10s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout client-fin 1h
    timeout server-fin 1h

frontend fe
    bind ${HOST}:${listenPort}
    default_backend be

backend be
    server up ${HOST}:${toPort}
`;
}

async function startForwarder(name, receiverPort) {
  if (name === 'direct') return { name, port: receiverPort, cp: null };
  const port = await freePort();
  if (name === 'splice' || name === 'js') {
    const cp = spawnChild(process.execPath, [path.join(here, 'forwarder.js'), '--engine', name, '--listen', String(port), '--to', String(receiverPort)]);
    await waitLine(cp, (l) => l.startsWith('ready'), 15000, `${name} forwarder ready`);
    return { name, port, cp };
  }
  if (isHaproxy(name)) {
    const dir = mkdtempSync(path.join(tmpdir(), 'splicer-bench-'));
    const cfg = path.join(dir, 'haproxy.cfg');
    const statsSocket = path.join(dir, 'stats.sock');
    writeFileSync(cfg, haproxyConfig(port, receiverPort, statsSocket, name === 'haproxy-forced'));
    const cp = spawnChild(haproxyBin, ['-db', '-f', cfg]);
    try {
      await waitListening(port, cp);
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    return { name, port, cp, dir, statsSocket };
  }
  if (isRelay(name)) {
    const dir = mkdtempSync(path.join(opt['record-dir'] ?? tmpdir(), 'splicer-bench-'));
    const cli = path.join(root, 'dist', 'cli', 'main.js');
    const cp = spawnChild(process.execPath, [cli, 'relay', '--listen', `${HOST}:${port}`, '--to', `${HOST}:${receiverPort}`, ...RELAY_ARGS[name](dir)]);
    try {
      await waitLine(cp, (l) => l.includes('"msg":"relay listening"'), 15000, `${name} ready`);
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    return { name, port, cp, dir };
  }
  if (isToxiproxy(name)) {
    const dir = mkdtempSync(path.join(tmpdir(), 'splicer-bench-'));
    const cfg = path.join(dir, 'toxiproxy.json');
    writeFileSync(cfg, JSON.stringify([{ name: 'bench', listen: `${HOST}:${port}`, upstream: `${HOST}:${receiverPort}`, enabled: true }]));
    const apiPort = await freePort();
    const cp = spawnChild(toxiproxyBin, ['-host', HOST, '-port', String(apiPort), '-config', cfg], { env: { LOG_LEVEL: 'warn' } });
    try {
      await waitListening(port, cp);
      await waitListening(apiPort, cp);
      if (name === 'toxiproxy-latency') {
        const res = await fetch(`http://${HOST}:${apiPort}/proxies/bench/toxics`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ name: 'latency_upstream', type: 'latency', stream: 'upstream', attributes: { latency: 1 } }),
        });
        if (!res.ok) throw new Error(`toxiproxy: adding the latency toxic answered ${res.status} ${await res.text()}`);
      }
    } catch (err) {
      await stopChild(cp).catch(() => {});
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    return { name, port, cp, dir };
  }
  if (name === 'socat') {
    // backlog=1024: socat's default listen backlog is 5, which drops SYNs when 64 streams connect at
    // once (1 s retransmit) and would measure the backlog instead of the relay.
    const cp = spawnChild(socatBin, [`TCP-LISTEN:${port},bind=${HOST},reuseaddr,fork,backlog=1024`, `TCP:${HOST}:${receiverPort}`]);
    await waitListening(port, cp);
    return { name, port, cp };
  }
  throw new Error(`unknown forwarder ${name}`);
}

async function stopForwarder(fwd) {
  if (!fwd) return;
  await stopChild(fwd.cp);
  if (fwd.name.startsWith('relay-record')) {
    try { fwd.recordedBytes = statSync(path.join(fwd.dir, 'bench.pcap')).size; } catch { fwd.recordedBytes = 0; }
  }
  if (fwd.dir) rmSync(fwd.dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------
// One transfer: ask the load generator (load.c or load.js) to move `bytes` over `streams` connections through the forwarder.

function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => { t = setTimeout(() => reject(new Error(`${what}: timeout after ${ms / 1000} s`)), ms); }),
  ]).finally(() => clearTimeout(t));
}

/** After the receiver has everything: wait until the forwarder has finished with the connections. */
async function settle(fwd, streams, linesBefore) {
  if (!fwd.cp) return { pairs: [] };
  const deadline = Date.now() + 10000;
  if (fwd.name === 'splice' || fwd.name === 'js') {
    // forwarder.js prints one `done` line per finished pair.
    let pairs = [];
    while (Date.now() < deadline) {
      pairs = fwd.cp.lines.slice(linesBefore).filter((l) => l.startsWith('done ')).map((l) => JSON.parse(l.slice(5)));
      if (pairs.length >= streams) break;
      await sleep(10);
    }
    return { pairs };
  }
  if (isRelay(fwd.name)) {
    // The relay logs one `connection closed` line per finished connection.
    let pairs = [];
    while (Date.now() < deadline) {
      pairs = fwd.cp.lines.slice(linesBefore).filter((l) => l.includes('"msg":"connection closed"')).map((l) => {
        const r = JSON.parse(l);
        return { engine: r.engine, reason: r.reason, code: r.code, bytesAtoB: r.bytesUp, error: r.reason === 'connect-failed' ? r.code : undefined, recordingDropped: r.recordingDropped };
      });
      if (pairs.length >= streams) break;
      await sleep(10);
    }
    return { pairs };
  }
  if (fwd.name === 'socat') {
    // socat forks per connection; wait until every child is reaped so that cutime/cstime hold it.
    while (Date.now() < deadline && childPids(fwd.cp.pid).length > 0) await sleep(10);
    await sleep(50);
    return { pairs: [] };
  }
  await sleep(200); // haproxy, toxiproxy: let them close the sessions
  return { pairs: [] };
}

/** HAProxy's `show info` over its stats socket, as { Name: value }; null when it cannot be had. */
function haproxyInfo(socketPath) {
  return new Promise((resolve) => {
    let text = '';
    const c = net.connect(socketPath);
    const t = setTimeout(() => { c.destroy(); resolve(null); }, 2000);
    c.on('connect', () => c.write('show info\n'));
    c.on('data', (d) => { text += d; });
    c.on('error', () => { clearTimeout(t); resolve(null); });
    c.on('close', () => {
      clearTimeout(t);
      const info = {};
      for (const line of text.split('\n')) {
        const i = line.indexOf(':');
        if (i > 0) info[line.slice(0, i).trim()] = line.slice(i + 1).trim();
      }
      resolve(info);
    });
  });
}

async function transfer(load, fwd, streams, bytes) {
  const linesBefore = fwd.cp ? fwd.cp.lines.length : 0;
  const pid = fwd.cp?.pid;
  const cpu0 = pid ? cpuSeconds(pid) : null;
  const threads0 = pid ? threadCpu(pid) : null;
  const loadCpu0 = cpuSeconds(load.pid);
  const machine0 = machineBusySeconds();
  const resultLine = waitLine(load, (l) => l.startsWith('{"type":"result"'), timeoutMs, 'transfer result');
  load.stdin.write(JSON.stringify({ cmd: 'run', port: fwd.port, streams, bytes, ...(rateBytes ? { rate: rateBytes } : {}) }) + '\n');
  const res = JSON.parse(await resultLine);
  const { pairs } = await withTimeout(settle(fwd, streams, linesBefore), 15000, 'settle');
  const cpu1 = pid ? cpuSeconds(pid) : null;
  const threads1 = pid ? threadCpu(pid) : null;
  const loadCpu1 = cpuSeconds(load.pid);
  const machine1 = machineBusySeconds();

  const out = {
    ok: res.ok,
    bytes: res.bytes,
    expected: res.expected,
    seconds: res.seconds,
    cpuSec: pid ? cpu1 - cpu0 : null,
    loadCpuSec: loadCpu1 - loadCpu0,
    machineCpuSec: machine1 - machine0,
    error: res.error ?? null,
  };
  if (pid) {
    // Where the forwarder's CPU went, by thread (main, or tid), user and system (threads alive at both reads;
    // socat's forked children appear only in the total, through cutime/cstime).
    const byThread = {};
    for (const [tid, t1] of threads1) {
      const t0 = threads0.get(tid) ?? { user: 0, sys: 0 };
      const user = t1.user - t0.user;
      const sys = t1.sys - t0.sys;
      if (user + sys <= 0) continue;
      const key = tid === String(pid) ? `main (${t1.comm})` : `${tid} (${t1.comm})`;
      const e = (byThread[key] ??= { user: 0, sys: 0 });
      e.user = Math.round((e.user + user) * 100) / 100;
      e.sys = Math.round((e.sys + sys) * 100) / 100;
    }
    out.threads = byThread;
  }
  if (fwd.statsSocket) {
    // Pipes allocated so far (warm-up included): 0 means HAProxy never spliced.
    const info = await haproxyInfo(fwd.statsSocket);
    out.pipes = info && info.PipesUsed !== undefined ? Number(info.PipesUsed) + Number(info.PipesFree) : null;
  }
  // Node forwarders: check every pair went through the engine asked for and carried every byte.
  if (fwd.name === 'splice' || fwd.name === 'js' || isRelay(fwd.name)) {
    const bad = [];
    if (pairs.length < streams) bad.push(`${pairs.length}/${streams} pairs finished`);
    const errs = pairs.filter((p) => p.error);
    if (errs.length) bad.push(`forward() failed: ${errs[0].error}`);
    const wanted = isRelay(fwd.name) ? null : fwd.name;
    const wrong = pairs.filter((p) => !p.error && wanted && p.engine !== wanted);
    if (wrong.length) bad.push(`${wrong.length} pairs used engine ${wrong[0].engine}`);
    const dropped = pairs.filter((p) => p.recordingDropped);
    if (dropped.length) out.recordingDropped = dropped.length;
    const notEof = pairs.filter((p) => !p.error && p.reason !== 'eof');
    if (notEof.length) bad.push(`${notEof.length} pairs ended with ${notEof[0].reason}${notEof[0].code ? ` (${notEof[0].code})` : ''}`);
    const sum = pairs.reduce((s, p) => s + (p.bytesAtoB || 0), 0);
    if (pairs.length >= streams && sum !== bytes) bad.push(`forward() reported ${sum} bytes a→b, expected ${bytes}`);
    if (bad.length) {
      out.ok = false;
      out.error = [out.error, ...bad].filter(Boolean).join('; ');
    }
    out.engines = [...new Set(pairs.map((p) => p.engine).filter(Boolean))];
  }
  return out;
}

/** One measurement: fresh load process and fresh forwarder, warm-up, then the measured transfer. */
async function measure(name, streams, bytes) {
  let load;
  let fwd;
  const started = Date.now();
  try {
    load = spawnLoad();
    const ready = JSON.parse(await waitLine(load, (l) => l.startsWith('{"type":"ready"'), 15000, 'load ready'));
    fwd = await startForwarder(name, ready.port);
    if (warmupBytes > 0) {
      const wb = Math.max(Math.min(warmupBytes, bytes), streams);
      const w = await transfer(load, fwd, streams, wb);
      if (!w.ok) throw new Error(`warm-up failed: ${w.error}`);
    }
    const r = await transfer(load, fwd, streams, bytes);
    if (fwd.name.startsWith('relay-record')) {
      await stopForwarder(fwd); // closes the recording: its size is final
      r.recordedBytes = fwd.recordedBytes;
      fwd = null;
    }
    const gbps = r.ok ? r.bytes / r.seconds / 1e9 : null;
    const cpuPerGiB = r.ok && r.cpuSec !== null ? r.cpuSec / (r.bytes / GiB) : null;
    return { forwarder: name, streams, ...r, gbps, cpuPerGiB, loadCpuPerGiB: r.ok ? r.loadCpuSec / (r.bytes / GiB) : null,
      machineCpuPerGiB: r.ok ? r.machineCpuSec / (r.bytes / GiB) : null };
  } catch (err) {
    return { forwarder: name, streams, ok: false, error: err.message, wallSeconds: (Date.now() - started) / 1000 };
  } finally {
    await stopForwarder(fwd).catch(() => {});
    await stopChild(load).catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Report

function fmt(x, digits = 2) {
  return x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(digits);
}
function ratio(a, b) {
  return a === null || b === null || a === undefined || b === undefined || b === 0 ? null : a / b;
}

function summarize(all) {
  const results = {};
  const ratios = {};
  for (const s of streamCounts) {
    const rows = [];
    for (const f of forwarders) {
      const rs = all.filter((r) => r.forwarder === f && r.streams === s);
      const good = rs.filter((r) => r.ok);
      rows.push({
        forwarder: f,
        runs: rs.length,
        failed: rs.length - good.length,
        gbps: median(good.map((r) => r.gbps)),
        cpuPerGiB: f === 'direct' ? null : median(good.map((r) => r.cpuPerGiB)),
        seconds: median(good.map((r) => r.seconds)),
        loadCpuPerGiB: median(good.map((r) => r.loadCpuPerGiB)),
        machineCpuPerGiB: median(good.map((r) => r.machineCpuPerGiB)),
        ...(isHaproxy(f) ? { pipes: median(good.map((r) => r.pipes)) } : {}),
        errors: rs.filter((r) => !r.ok).map((r) => r.error),
      });
    }
    const js = rows.find((r) => r.forwarder === baseline);
    const hap = rows.find((r) => r.forwarder === 'haproxy');
    for (const r of rows) {
      r.throughputVsJs = ratio(r.gbps, js?.gbps ?? null);
      r.cpuVsJs = ratio(r.cpuPerGiB, js?.cpuPerGiB ?? null);
      r.cpuVsHaproxy = ratio(r.cpuPerGiB, hap?.cpuPerGiB ?? null);
    }
    results[s] = rows;
    const sp = rows.find((r) => r.forwarder === 'splice');
    const hapf = rows.find((r) => r.forwarder === 'haproxy-forced');
    const vs = (x) => ({ throughput: ratio(sp?.gbps ?? null, x?.gbps ?? null), cpu: ratio(sp?.cpuPerGiB ?? null, x?.cpuPerGiB ?? null) });
    ratios[s] = { spliceVsJs: vs(js), spliceVsHaproxy: vs(hap), spliceVsHaproxyForced: vs(hapf) };
  }
  return { results, ratios };
}

function printTables({ results, ratios }) {
  const out = [];
  const med = runs > 1 ? `, medians of ${runs} runs` : '';
  for (const s of streamCounts) {
    out.push('');
    out.push(`### ${s} stream${s === 1 ? '' : 's'} (${gib} GiB total${s > 1 ? `, ${fmt(totalBytes / s / 2 ** 20, 1)} MiB each` : ''}${med})`);
    out.push('');
    out.push(`| forwarder | GB/s | CPU s per GiB | throughput ratio vs ${baseline} | CPU ratio vs ${baseline} | CPU ratio vs haproxy |`);
    out.push('|---|---:|---:|---:|---:|---:|');
    for (const r of results[s]) {
      const fail = r.failed ? ` (${r.failed}/${r.runs} failed)` : '';
      if (r.gbps === null) {
        out.push(`| ${r.forwarder} | FAILED${fail} | – | – | – | – |`);
        continue;
      }
      const pipes = r.pipes === 0 ? ' (never spliced)' : '';
      out.push(`| ${r.forwarder}${fail}${pipes} | ${fmt(r.gbps)} | ${fmt(r.cpuPerGiB)} | ${fmt(r.throughputVsJs)} | ${fmt(r.cpuVsJs)} | ${fmt(r.cpuVsHaproxy)} |`);
    }
    const q = ratios[s];
    const parts = [];
    if (baseline === 'js' && (q.spliceVsJs.throughput !== null || q.spliceVsJs.cpu !== null)) {
      parts.push(`splice/js: throughput ×${fmt(q.spliceVsJs.throughput)}, CPU per GiB ×${fmt(q.spliceVsJs.cpu)}`);
    }
    if (q.spliceVsHaproxy.throughput !== null || q.spliceVsHaproxy.cpu !== null) {
      parts.push(`splice/haproxy: throughput ×${fmt(q.spliceVsHaproxy.throughput)}, CPU per GiB ×${fmt(q.spliceVsHaproxy.cpu)}`);
    }
    if (q.spliceVsHaproxyForced.throughput !== null || q.spliceVsHaproxyForced.cpu !== null) {
      parts.push(`splice/haproxy-forced: throughput ×${fmt(q.spliceVsHaproxyForced.throughput)}, CPU per GiB ×${fmt(q.spliceVsHaproxyForced.cpu)}`);
    }
    if (parts.length) {
      out.push('');
      for (const p of parts) out.push(`- ${p}`);
    }
    for (const r of results[s]) for (const e of new Set(r.errors)) out.push(`- ${r.forwarder} failure: ${e}`);
  }
  out.push('');
  out.push('GB/s = 10^9 bytes/s, first connect to last byte received. CPU = forwarder process utime+stime+cutime+cstime');
  out.push(`per GiB (sender and receiver run in a separate process: load generator ${loadDesc}). haproxy runs with nbthread 1 and 1 MiB pipes`);
  out.push('(haproxy: option splice-auto; haproxy-forced: option splice-request + splice-response). splicer\'s');
  out.push('splice engine uses one loop thread plus the Node main thread, all counted. The JSON also has');
  out.push('machineCpuPerGiB (all CPUs, /proc/stat): on loopback softirq work is charged to whichever task runs, so');
  out.push('per-process CPU can shift between processes; the machine figure cannot, but counts anything else running.');
  const hp = streamCounts.flatMap((s) => results[s].filter((r) => isHaproxy(r.forwarder) && r.pipes !== undefined && r.pipes !== null).map((r) => `${r.forwarder} ×${s}: ${r.pipes}`));
  if (hp.length) out.push(`Pipes HAProxy allocated (0 = never spliced): ${hp.join(', ')}.`);
  for (const [f, why] of Object.entries(skipped)) out.push(`Skipped ${f}: ${why}.`);
  process.stdout.write(out.join('\n') + '\n');
}

// ---------------------------------------------------------------------------------------------

async function main() {
  installExitHandlers();
  if (forwarders.length === 0) {
    log('no forwarder to run');
    process.exit(2);
  }
  if (rateBytes && loadKind !== 'c') {
    log('--rate-mb needs the C load generator (--load c)');
    process.exit(2);
  }
  log(`throughput: ${rateBytes ? `paced at ${rateBytes / 1e6} MB/s, ` : ''}${gib} GiB, streams ${streamCounts.join(',')}, runs ${runs}, forwarders ${forwarders.join(',')}, timeout ${timeoutMs / 1000} s, load ${loadDesc}`);
  const all = [];
  for (let run = 1; run <= runs; run++) {
    for (const s of streamCounts) {
      for (const f of forwarders) {
        const r = await measure(f, s, totalBytes);
        r.run = run;
        all.push(r);
        log(r.ok
          ? `run ${run} ${f} ×${s}: ${fmt(r.gbps)} GB/s, ${fmt(r.seconds, 3)} s, forwarder CPU ${fmt(r.cpuSec, 2)} s = ${fmt(r.cpuPerGiB)} s/GiB (load ${fmt(r.loadCpuPerGiB)}, machine ${fmt(r.machineCpuPerGiB)} s/GiB)${r.engines ? `, engine ${r.engines.join('+')}` : ''}${r.recordingDropped ? `, RECORDING DROPPED on ${r.recordingDropped} connection(s)` : ''}${r.recordedBytes ? `, recorded ${fmt(r.recordedBytes / 2 ** 20, 0)} MiB` : ''}`
          : `run ${run} ${f} ×${s}: FAILED: ${r.error}`);
      }
    }
  }
  const summary = summarize(all);
  printTables(summary);

  const json = {
    meta: {
      date: new Date().toISOString(),
      gib,
      bytes: totalBytes,
      streams: streamCounts,
      runs,
      warmupBytes,
      load: loadKind,
      loadBinary: loadBin ? path.relative(root, loadBin) : null,
      cc: loadKind === 'c' ? firstLine(ccBin, ['--version']) : null,
      loadThreads: loadKind === 'c' ? 2 : Number(loadThreads),
      timeoutSeconds: timeoutMs / 1000,
      node: process.version,
      kernel: release(),
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? null,
      pipeMaxSize: (() => { try { return Number(readFileSync('/proc/sys/fs/pipe-max-size', 'utf8')); } catch { return null; } })(),
      haproxy: haproxyBin ? toolVersion(haproxyBin, ['-v']) : null,
      toxiproxy: toxiproxyBin ? firstLine(toxiproxyBin, ['-version']) : null,
      socat: socatBin ? toolVersion(socatBin, ['-V']) : null,
      notes: [
        'GB/s = 1e9 bytes per second from first connect to last byte received',
        'cpuPerGiB = forwarder utime+stime+cutime+cstime seconds per GiB',
        'machineCpuPerGiB = busy seconds of all CPUs (/proc/stat user+nice+system+irq+softirq) per GiB; includes anything else running on the machine',
        `loadCpuPerGiB = sender+receiver process CPU seconds per GiB (load generator: ${loadDesc})`,
        'haproxy: nbthread 1, option splice-auto, tune.pipesize 1048576',
        'haproxy-forced: the same with option splice-request + option splice-response',
        'pipes (haproxy rows) = PipesUsed + PipesFree from show info after the transfer; 0 = never spliced',
        'toxiproxy: LOG_LEVEL=warn, one proxy; toxiproxy-latency adds a 1 ms latency toxic on the upstream stream (sender to receiver)',
        'socat: backlog=1024 added to TCP-LISTEN (default 5 drops SYNs with 64 streams)',
      ],
      skipped,
    },
    results: summary.results,
    ratios: summary.ratios,
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
