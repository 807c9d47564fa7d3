#!/usr/bin/env node
// Reverse-tunnel benchmark: splicer tunnel (splice engine, JS engine, TLS, with and without a pool)
// side by side with `ssh -R` through a local sshd, and with no tunnel at all, in the same run, on
// 127.0.0.1 only.
//
//   node bench/tunnel.js [--only direct,splice,splice-node,splice-server-node,splice-t0,splice-pool,splice-mux,js,tls,ssh,forward,relay] [--tests bulk,latency,idle]
//                        [--gib 1] [--streams 1,8] [--count 500] [--warmup 3000] [--idle 1000] [--pool 8] [--runs 3]
//                        [--warmup-mib 64] [--ssh-cipher aes128-gcm@openssh.com] [--timeout 120] [--json FILE]
//   npm run bench:tunnel -- [options]
//
// Setups (each started fresh for every measurement; missing ones are skipped, and said so):
//   direct       no tunnel: the load driver talks to its own targets (the ceiling)
//   splice       node dist/cli/main.js tunnel server + tunnel client, --engine splice, --pool 0 (each
//                public connection asks the client for a data connection)
//   splice-node  as splice, the client's streams on net.Socket (--data-path node) instead of the
//                addon's connections
//   splice-server-node  as splice, the server's listeners net.Servers (server --data-path node)
//                instead of the addon's acceptors
//   splice-t0    as splice, both with --threads 0 (the engine's loop on the main thread: no thread
//                switch per connection)
//   splice-pool  the same with --pool N (--pool, default 8): data connections dialled ahead of need
//   splice-mux   the server as splice, the client with --mux: every public connection a stream of one
//                mux connection (yamux, the JS engine at both ends of that hop), no connection per stream
//   js           both with --engine js, --pool 0
//   tls          both with TLS (a throwaway self-signed certificate, pinned by fingerprint); the JS
//                engine carries the data, --pool 0
//   ssh          sshd -D on a loopback port (throwaway host and user keys) and ssh -N -R, one remote
//                forward per target, cipher --ssh-cipher (AES-GCM: the fastest here with AES-NI)
//   forward      latency only: `splicer forward` (splice engine) in front of the echo service: one hop,
//                no tunnel, for scale (a tunnelled connection is two such hops and a control message)
//   relay        latency only: `splicer relay` (no toxic: spliced) in front of the echo service
//
// Measurements:
//   bulk     --gib GiB one way (public client → service) through the published port of the sink, split
//            across --streams connections: GB/s (10^9 bytes/s, first connect to the last byte at the
//            sink), and CPU seconds per GiB of the tunnel's processes (server + client; for ssh, sshd
//            with its per-session children + ssh), read from /proc before and after. splicer's
//            `connection closed` records are checked: every stream on the expected engine, every byte.
//   latency  --count connections one after another (1 client): connect(), 1 byte out, 1 byte back from
//            an echo service, close. Latency is connect() start to that first byte back (p50, p99); CPU
//            µs per connection of the tunnel's processes (and of server and client apart). The client
//            and the echo service run in this process (the same for every setup: `p50 − direct` is
//            the tunnel's own cost). The --warmup connections before them are measured too, as the
//            cold figure: the first connections of fresh processes, while V8 still compiles the code
//            they run (the CPU per connection of the tunnel's two processes stops falling after about
//            2500; ssh, native code, gets 100 warm-up connections at most: each costs it 40 ms).
//   idle     --idle connections opened through the tunnel to an echo service, each one round trip
//            (so the whole path exists), then held idle: the tunnel processes' RSS growth per connection.
// --runs N repeats everything (interleaved: every setup per measurement, then the next run) and
// reports medians. Everything has a timeout; every child is killed on exit, SIGINT and SIGTERM.
//
// Bulk load: bench/load.c (shared with bench/throughput.js), compiled at startup with cc -O2 -pthread
// into .bench-out/: its sender dials the published port, its receiver is the service behind the tunnel.
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir, release, cpus } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import {
  HOST, installExitHandlers, spawnChild, waitLine, stopChild, freePort, waitListening, cpuSeconds, sleep, median, which,
  machineBusySeconds, compileC, treePids,
} from './lib.js';
import { sshUnavailable, startSshTunnel } from './tunnel-ssh.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, '..');
const GiB = 2 ** 30;
const ALL = ['direct', 'splice', 'splice-node', 'splice-server-node', 'splice-t0', 'splice-pool', 'splice-mux', 'js', 'tls', 'ssh', 'forward', 'relay'];
/** One hop in front of the echo service: measured by the latency test only. */
const HOPS = ['forward', 'relay'];
const TESTS = ['bulk', 'latency', 'idle'];

const { values: opt } = parseArgs({
  options: {
    only: { type: 'string' },
    tests: { type: 'string', default: TESTS.join(',') },
    gib: { type: 'string', default: '1' },
    streams: { type: 'string', default: '1,8' },
    count: { type: 'string', default: '500' },
    warmup: { type: 'string', default: '3000' },
    idle: { type: 'string', default: '1000' },
    pool: { type: 'string', default: '8' },
    runs: { type: 'string', default: '3' },
    'warmup-mib': { type: 'string', default: '64' },
    'ssh-cipher': { type: 'string', default: 'aes128-gcm@openssh.com' },
    timeout: { type: 'string', default: '120' },
    json: { type: 'string' },
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
const gib = Number(opt.gib);
const totalBytes = Math.round(gib * GiB);
const streamLevels = list(opt.streams).map(Number);
const count = Number(opt.count);
const warmup = Number(opt.warmup);
const idleCount = Number(opt.idle);
const pool = Number(opt.pool);
const runs = Number(opt.runs);
const warmupBytes = Math.round(Number(opt['warmup-mib']) * 2 ** 20);
const timeoutMs = Number(opt.timeout) * 1000;
const only = opt.only ? list(opt.only) : ALL;
const tests = list(opt.tests);
const bad = [];
if (!(gib > 0)) bad.push('--gib > 0');
if (streamLevels.length === 0 || streamLevels.some((s) => !Number.isInteger(s) || s < 1 || s > 1024)) bad.push('--streams: integers 1..1024');
if (!Number.isInteger(count) || count < 1 || count > 100000) bad.push('--count: 1..100000');
if (!Number.isInteger(warmup) || warmup < 0 || warmup > 100000) bad.push('--warmup: 0..100000');
if (!Number.isInteger(idleCount) || idleCount < 1 || idleCount > 5000) bad.push('--idle: 1..5000');
if (!Number.isInteger(pool) || pool < 1 || pool > 64) bad.push('--pool: 1..64');
if (!Number.isInteger(runs) || runs < 1) bad.push('--runs >= 1');
if (!(timeoutMs > 0)) bad.push('--timeout > 0');
for (const s of only) if (!ALL.includes(s)) bad.push(`--only: unknown setup ${s} (known: ${ALL.join(', ')})`);
for (const t of tests) if (!TESTS.includes(t)) bad.push(`--tests: unknown test ${t} (known: ${TESTS.join(', ')})`);
if (bad.length) {
  process.stderr.write(`bad option: ${bad.join('; ')}\n`);
  process.exit(2);
}
const log = (msg) => process.stderr.write(msg + '\n');

// ---------------------------------------------------------------------------------------------
// What can run here

const cliJs = path.join(root, 'dist', 'cli', 'main.js');
const skipped = {};
const setups = only.filter((s) => {
  if (s !== 'direct' && s !== 'ssh' && !existsSync(cliJs)) skipped[s] = 'dist/cli/main.js missing (npx tsc -p tsconfig.build.json)';
  else if (s === 'tls' && !which('openssl')) skipped[s] = 'openssl not on PATH (for the throwaway certificate)';
  else if (s === 'ssh' && sshUnavailable()) skipped[s] = sshUnavailable();
  else return true;
  return false;
});
for (const [s, why] of Object.entries(skipped)) log(`skipping ${s}: ${why}`);

const cc = which('cc');
if (!cc) {
  log('cc not on PATH: the load driver bench/load.c cannot be built');
  process.exit(2);
}
let driverBin;
try {
  driverBin = compileC(cc, 'load');
} catch (err) {
  log(err.message);
  process.exit(2);
}

const TOKEN = randomBytes(32).toString('hex');
process.env.SPLICER_TUNNEL_TOKEN = TOKEN;
let certDir;
let fingerprint;
function makeCert() {
  if (certDir) return;
  certDir = mkdtempSync(path.join(tmpdir(), 'splicer-bench-tunnel-tls-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-keyout', path.join(certDir, 'key.pem'), '-out', path.join(certDir, 'cert.pem'), '-subj', '/CN=tunnel.bench'], { stdio: 'ignore' });
  fingerprint = execFileSync('openssl', ['x509', '-in', path.join(certDir, 'cert.pem'), '-noout', '-fingerprint', '-sha256'], { encoding: 'utf8' }).trim().split('=')[1];
}

// ---------------------------------------------------------------------------------------------
// The driver, the echo service (for idle connections), the setups

async function startDriver() {
  const cp = spawnChild(driverBin, []);
  const ready = JSON.parse(await waitLine(cp, (l) => l.startsWith('{"type":"ready"'), 10000, 'load driver ready'));
  return { cp, sinkPort: ready.port };
}

async function driverCommand(driver, cmd, type, ms) {
  const line = waitLine(driver.cp, (l) => l.startsWith(`{"type":"${type}"`), ms, `${type} result`);
  driver.cp.stdin.write(JSON.stringify(cmd) + '\n');
  return JSON.parse(await line);
}

const echoSockets = new Set();
const echo = net.createServer((socket) => {
  echoSockets.add(socket);
  socket.on('error', () => {});
  socket.on('close', () => echoSockets.delete(socket));
  socket.pipe(socket);
});
await new Promise((resolve) => echo.listen(0, HOST, resolve));
const echoPort = echo.address().port;

/** Waits for the client's stderr to name where each tunnel went: `splicer tunnel: NAME HOST:PORT -> ...`. */
async function publishedPorts(cp, names, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const ports = {};
    for (const m of cp.stderrText.matchAll(/splicer tunnel: (\S+) \S+:(\d+) ->/g)) ports[m[1]] = Number(m[2]);
    if (names.every((n) => ports[n])) return ports;
    if (cp.exitCode !== null) throw new Error(`tunnel client exited: ${cp.stderrText.trim().slice(-500)}`);
    if (Date.now() > deadline) throw new Error(`tunnels not up after ${ms} ms: ${cp.stderrText.trim().slice(-500)}`);
    await sleep(20);
  }
}

async function startSetup(name, driver, logLevel) {
  const targets = { sink: driver.sinkPort, echo: echoPort };
  if (name === 'direct') return { name, ports: targets, pids: [], stop: async () => {} };
  if (HOPS.includes(name)) {
    const port = await freePort();
    const hop = spawnChild(process.execPath, [cliJs, name, '--listen', `${HOST}:${port}`, '--to', `${HOST}:${echoPort}`, '--engine', 'splice',
      '--log-level', logLevel, '--grace', '0']);
    try {
      await waitListening(port, hop, 15000);
    } catch (err) {
      await stopChild(hop).catch(() => {});
      throw err;
    }
    return { name, ports: { echo: port }, pids: [hop.pid], roles: { [name]: [hop.pid] }, stop: () => stopChild(hop, 3000) };
  }
  if (name === 'ssh') {
    const ssh = await startSshTunnel(targets, { cipher: opt['ssh-cipher'] });
    return { name, ...ssh, roles: { server: [ssh.pids[0]], client: [ssh.pids[1]] } };
  }
  const engine = name === 'js' ? 'js' : name === 'tls' ? 'auto' : 'splice';
  const listenPort = await freePort();
  const tlsServer = [];
  const tlsClient = [];
  const threads = name === 'splice-t0' ? ['--threads', '0'] : [];
  const dataPath = name === 'splice-node' ? ['--data-path', 'node'] : [];
  // A mux stream cannot be spliced: the client takes auto (it refuses --engine splice with --mux).
  const clientEngine = name === 'splice-mux' ? 'auto' : engine;
  const mux = name === 'splice-mux' ? ['--mux'] : [];
  const serverDataPath = name === 'splice-server-node' ? ['--data-path', 'node'] : [];
  if (name === 'tls') {
    makeCert();
    tlsServer.push('--tls-cert', path.join(certDir, 'cert.pem'), '--tls-key', path.join(certDir, 'key.pem'));
    tlsClient.push('--tls-fingerprint', fingerprint);
  }
  const server = spawnChild(process.execPath, [cliJs, 'tunnel', 'server', '--listen', `${HOST}:${listenPort}`, '--engine', engine,
    '--log-level', logLevel, '--grace', '0', '--max-pool', '64', ...threads, ...serverDataPath, ...tlsServer]);
  let client;
  try {
    await waitListening(listenPort, server, 15000);
    client = spawnChild(process.execPath, [cliJs, 'tunnel', 'client', '--server', `${HOST}:${listenPort}`, '--engine', clientEngine,
      '--log-level', logLevel, '--grace', '0', '--pool', name === 'splice-pool' ? String(pool) : '0', ...threads, ...dataPath, ...mux, ...tlsClient,
      ...Object.entries(targets).flatMap(([n, p]) => ['--expose', `${n}=${HOST}:${p}@0`])]);
    const ports = await publishedPorts(client, Object.keys(targets));
    return {
      name, ports, pids: [server.pid, client.pid], roles: { server: [server.pid], client: [client.pid] }, server, client,
      async stop() {
        await stopChild(client, 3000);
        await stopChild(server, 3000);
      },
    };
  } catch (err) {
    await stopChild(client).catch(() => {});
    await stopChild(server).catch(() => {});
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// /proc readers

function treeCpu(pids) {
  let total = 0;
  for (const p of treePids(pids)) {
    try { total += cpuSeconds(p); } catch { /* gone */ }
  }
  return total;
}

/** Resident set size in KiB of the processes and their descendants. */
function treeRssKiB(pids) {
  let total = 0;
  for (const p of treePids(pids)) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      if (m) total += Number(m[1]);
    } catch { /* gone */ }
  }
  return total;
}

function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([promise, new Promise((_, reject) => { t = setTimeout(() => reject(new Error(`${what}: timeout after ${ms / 1000} s`)), ms); })])
    .finally(() => clearTimeout(t));
}

function closedRecords(cp, from) {
  const out = [];
  for (const l of cp.lines.slice(from)) {
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

async function measureBulk(name, streams) {
  let driver;
  let setup;
  try {
    driver = await startDriver();
    setup = await startSetup(name, driver, 'info');
    const port = setup.ports.sink;
    if (warmupBytes > 0) {
      const w = await driverCommand(driver, { cmd: 'run', port, streams, bytes: Math.max(Math.min(warmupBytes, totalBytes), streams) }, 'result', timeoutMs);
      if (!w.ok) throw new Error(`warm-up failed: ${w.error}`);
    }
    await sleep(200);
    const from = setup.server ? setup.server.lines.length : 0;
    const cpu0 = treeCpu(setup.pids);
    const m0 = machineBusySeconds();
    const r = await driverCommand(driver, { cmd: 'run', port, streams, bytes: totalBytes }, 'result', timeoutMs);
    let recs = [];
    if (setup.server) {
      const deadline = Date.now() + 10000;
      while (Date.now() < deadline && (recs = closedRecords(setup.server, from)).length < streams) await sleep(10);
    } else {
      await sleep(200);
    }
    const cpuSec = treeCpu(setup.pids) - cpu0;
    const machineSec = machineBusySeconds() - m0;
    const out = {
      test: 'bulk', setup: name, streams, ok: r.ok, bytes: r.bytes, seconds: r.seconds,
      gbps: r.ok ? r.bytes / r.seconds / 1e9 : null,
      cpuPerGiB: r.ok && setup.pids.length ? cpuSec / (r.bytes / GiB) : null,
      machineCpuPerGiB: r.ok ? machineSec / (r.bytes / GiB) : null,
      error: r.error ?? null,
    };
    if (setup.server) {
      const engine = name === 'js' || name === 'tls' || name === 'splice-mux' ? 'js' : 'splice';
      const problems = [];
      if (recs.length < streams) problems.push(`${recs.length}/${streams} connection records`);
      const wrong = recs.filter((x) => x.engine !== engine || x.reason !== 'eof');
      if (wrong.length) problems.push(`${wrong.length} streams not ${engine}/eof (${wrong[0].engine}/${wrong[0].reason})`);
      const up = recs.reduce((n, x) => n + x.bytesUp, 0);
      if (r.ok && up !== r.bytes) problems.push(`records say ${up} bytes, the sink got ${r.bytes}`);
      if (problems.length) { out.ok = false; out.error = problems.join('; '); }
    }
    return out;
  } catch (err) {
    return { test: 'bulk', setup: name, streams, ok: false, error: err.message };
  } finally {
    await setup?.stop().catch(() => {});
    await stopChild(driver?.cp).catch(() => {});
  }
}

/** One connection: connect(), 1 byte out, resolves at the first byte back with the ms it took. */
function roundTrip(port) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const socket = net.connect({ host: HOST, port, noDelay: true });
    const timer = setTimeout(() => { socket.destroy(); reject(new Error('no byte back within 5 s')); }, 5000);
    socket.once('error', (err) => { clearTimeout(timer); reject(err); });
    socket.once('connect', () => socket.write('x'));
    socket.once('data', () => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      clearTimeout(timer);
      socket.on('error', () => {});
      socket.destroy();
      resolve(ms);
    });
  });
}

async function measureLatency(name) {
  let driver;
  let setup;
  try {
    driver = await startDriver();
    setup = await startSetup(name, driver, 'silent');
    const port = setup.ports.echo;
    // A connection to start the processes' lazy parts (the first accept, the engine's thread), not counted.
    await roundTrip(port);
    await sleep(100);
    const warm = name === 'ssh' ? Math.min(warmup, 100) : warmup;
    const cold0 = treeCpu(setup.pids);
    for (let i = 0; i < warm; i++) await roundTrip(port);
    const coldCpu = treeCpu(setup.pids) - cold0;
    await sleep(200);
    const roles = Object.entries(setup.roles ?? {});
    const cpu0 = treeCpu(setup.pids);
    const role0 = roles.map(([, pids]) => treeCpu(pids));
    const times = [];
    const t0 = performance.now();
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < count && Date.now() < deadline; i++) times.push(await roundTrip(port));
    const seconds = (performance.now() - t0) / 1000;
    await sleep(200);
    const cpuSec = treeCpu(setup.pids) - cpu0;
    const roleUs = Object.fromEntries(roles.map(([role, pids], i) => [role, (treeCpu(pids) - role0[i]) / times.length * 1e6]));
    times.sort((a, b) => a - b);
    const pct = (p) => times[Math.min(times.length - 1, Math.floor(p * times.length))];
    return {
      test: 'latency', setup: name, ok: times.length === count, done: times.length,
      p50Ms: median(times), p99Ms: pct(0.99),
      connsPerSec: times.length / seconds,
      cpuUsPerConn: setup.pids.length ? cpuSec / times.length * 1e6 : null,
      roleUsPerConn: roleUs,
      warmup: warm,
      coldCpuUsPerConn: setup.pids.length && warm > 0 ? coldCpu / warm * 1e6 : null,
      error: times.length === count ? null : `${times.length}/${count} in ${timeoutMs / 1000} s`,
    };
  } catch (err) {
    return { test: 'latency', setup: name, ok: false, error: err.message };
  } finally {
    await setup?.stop().catch(() => {});
    await stopChild(driver?.cp).catch(() => {});
    for (const s of echoSockets) s.destroy();
  }
}

function openOne(port) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: HOST, port, noDelay: true });
    const timer = setTimeout(() => { socket.destroy(); reject(new Error('idle connection: no echo within 10 s')); }, 10000);
    socket.once('error', (err) => { clearTimeout(timer); reject(err); });
    socket.once('connect', () => socket.write('x'));
    socket.once('data', () => {
      clearTimeout(timer);
      socket.on('error', () => {});
      resolve(socket);
    });
  });
}

async function measureIdle(name) {
  let driver;
  let setup;
  const sockets = [];
  try {
    driver = await startDriver();
    setup = await startSetup(name, driver, 'silent');
    const port = setup.ports.echo;
    // Warm-up: the first connections pay for code paths and buffers that later ones reuse.
    for (const s of await Promise.all(Array.from({ length: 20 }, () => openOne(port)))) s.destroy();
    await sleep(500);
    const rss0 = treeRssKiB(setup.pids);
    for (let i = 0; i < idleCount; i += 50) {
      sockets.push(...(await withTimeout(Promise.all(Array.from({ length: Math.min(50, idleCount - i) }, () => openOne(port))), 30000, 'opening idle connections')));
    }
    await sleep(1000);
    const rss1 = treeRssKiB(setup.pids);
    return { test: 'idle', setup: name, ok: true, connections: sockets.length, kibPerConn: setup.pids.length ? (rss1 - rss0) / sockets.length : null, rssMiB: rss1 / 1024 };
  } catch (err) {
    return { test: 'idle', setup: name, ok: false, error: err.message };
  } finally {
    for (const s of sockets) s.destroy();
    await setup?.stop().catch(() => {});
    await stopChild(driver?.cp).catch(() => {});
    for (const s of echoSockets) s.destroy();
  }
}

// ---------------------------------------------------------------------------------------------

installExitHandlers();
const results = [];
const started = Date.now();
log(`tunnel bench: setups ${setups.join(', ')}; tests ${tests.join(', ')}; ${runs} run(s); ${gib} GiB per bulk; ${count} latency connections; ${idleCount} idle`);
for (let run = 1; run <= runs; run++) {
  for (const test of tests) {
    const levels = test === 'bulk' ? streamLevels : [null];
    for (const level of levels) {
      for (const name of setups) {
        if (test === 'idle' && name === 'direct') continue;
        if (test !== 'latency' && HOPS.includes(name)) continue;
        const r = test === 'bulk' ? await measureBulk(name, level) : test === 'latency' ? await measureLatency(name) : await measureIdle(name);
        r.run = run;
        results.push(r);
        const summary = !r.ok ? `FAILED: ${r.error}`
          : test === 'bulk' ? `${r.gbps.toFixed(2)} GB/s, ${r.cpuPerGiB?.toFixed(2) ?? '–'} CPU s/GiB`
          : test === 'latency' ? `p50 ${r.p50Ms.toFixed(3)} ms, p99 ${r.p99Ms.toFixed(3)} ms, ${r.cpuUsPerConn?.toFixed(0) ?? '–'} µs CPU/conn`
            + `${Object.keys(r.roleUsPerConn).length > 1 ? ` (${Object.entries(r.roleUsPerConn).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(' + ')})` : ''}`
            + `${r.coldCpuUsPerConn != null ? `, first ${r.warmup}: ${r.coldCpuUsPerConn.toFixed(0)} µs CPU/conn` : ''}`
          : `${r.kibPerConn.toFixed(1)} KiB per idle connection`;
        log(`run ${run} ${test}${level ? ` ${level} stream(s)` : ''} ${name}: ${summary}`);
      }
    }
  }
}
echo.close();
if (certDir) rmSync(certDir, { recursive: true, force: true });

// ---------------------------------------------------------------------------------------------
// Report: medians, ratios to direct (throughput, latency) and to ssh (CPU, memory)

const med = (test, name, key, level) => median(results.filter((r) => r.test === test && r.setup === name && r.ok && (level == null || r.streams === level)).map((r) => r[key]));
const fmt = (x, d = 2) => (x == null ? '–' : x.toFixed(d));
const ratio = (a, b, d = 2) => (a == null || b == null || b === 0 ? '–' : `${(a / b).toFixed(d)}×`);
const label = {
  direct: 'no tunnel (the limit)',
  splice: '**splicer tunnel, splice engine**',
  'splice-node': 'splicer tunnel, splice engine, client --data-path node',
  'splice-server-node': 'splicer tunnel, splice engine, server --data-path node',
  'splice-t0': 'splicer tunnel, splice engine, --threads 0',
  'splice-pool': `splicer tunnel, splice, --pool ${pool}`,
  'splice-mux': 'splicer tunnel, splice server, client --mux (streams: JS engine)',
  js: 'splicer tunnel, JS engine',
  tls: 'splicer tunnel, TLS (JS engine)',
  ssh: `ssh -R (OpenSSH, ${opt['ssh-cipher']})`,
  forward: 'for scale: splicer forward, one hop (splice)',
  relay: 'for scale: splicer relay, one hop, no toxic (splice)',
};
const lines = [];
lines.push(`Kernel ${release()}, Node ${process.version}, ${cpus().length} CPUs, ${runs} run(s), medians. CPU: the tunnel's own processes (server + client; sshd + ssh).`, '');
if (tests.includes('bulk')) {
  for (const level of streamLevels) {
    lines.push(`| bulk, ${level} stream${level > 1 ? 's' : ''}, ${gib} GiB | GB/s | × direct | CPU s per GiB | CPU × ssh | machine CPU s per GiB |`, '|---|---:|---:|---:|---:|---:|');
    const d = med('bulk', 'direct', 'gbps', level);
    const sshCpu = med('bulk', 'ssh', 'cpuPerGiB', level);
    for (const name of setups) {
      const g = med('bulk', name, 'gbps', level);
      const c = med('bulk', name, 'cpuPerGiB', level);
      lines.push(`| ${label[name]} | ${fmt(g)} | ${ratio(g, d)} | ${fmt(c)} | ${ratio(c, sshCpu)} | ${fmt(med('bulk', name, 'machineCpuPerGiB', level))} |`);
    }
    lines.push('');
  }
}
if (tests.includes('latency')) {
  lines.push(`| connect to first byte, ${count} connections after ${warmup} warm-up, 1 client | p50 ms | p99 ms | p50 − direct | conns/s | CPU µs per conn | server + client | CPU × ssh | first ${warmup}: CPU µs per conn |`,
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  const d = med('latency', 'direct', 'p50Ms');
  const sshCpu = med('latency', 'ssh', 'cpuUsPerConn');
  const role = (name, r) => median(results.filter((x) => x.test === 'latency' && x.setup === name && x.ok && x.roleUsPerConn?.[r] != null).map((x) => x.roleUsPerConn[r]));
  for (const name of setups) {
    const p50 = med('latency', name, 'p50Ms');
    const cpu = med('latency', name, 'cpuUsPerConn');
    const split = role(name, 'server') != null && role(name, 'client') != null ? `${fmt(role(name, 'server'), 0)} + ${fmt(role(name, 'client'), 0)}` : '–';
    lines.push(`| ${label[name]} | ${fmt(p50, 3)} | ${fmt(med('latency', name, 'p99Ms'), 3)} | ${p50 == null || d == null ? '–' : `+${(p50 - d).toFixed(3)}`} | ${fmt(med('latency', name, 'connsPerSec'), 0)} | ${fmt(cpu, 0)} | ${split} | ${ratio(cpu, sshCpu)} | ${fmt(med('latency', name, 'coldCpuUsPerConn'), 0)} |`);
  }
  lines.push('');
}
if (tests.includes('idle')) {
  lines.push(`| ${idleCount} idle connections | KiB per connection | × ssh | RSS MiB (all) |`, '|---|---:|---:|---:|');
  const s = med('idle', 'ssh', 'kibPerConn');
  for (const name of setups.filter((n) => n !== 'direct')) {
    const k = med('idle', name, 'kibPerConn');
    lines.push(`| ${label[name]} | ${fmt(k, 1)} | ${ratio(k, s)} | ${fmt(med('idle', name, 'rssMiB'), 0)} |`);
  }
  lines.push('');
}
const failures = results.filter((r) => !r.ok);
if (failures.length) lines.push(`${failures.length} measurement(s) failed: ${failures.map((f) => `${f.test}/${f.setup}: ${f.error}`).join('; ')}`, '');
for (const [s, why] of Object.entries(skipped)) lines.push(`skipped ${s}: ${why}`);
lines.push(`(${((Date.now() - started) / 1000).toFixed(0)} s)`);
process.stdout.write(lines.join('\n') + '\n');
if (opt.json) writeFileSync(opt.json, JSON.stringify({ options: opt, results }, null, 2));
process.exit(failures.length ? 1 : 0);
