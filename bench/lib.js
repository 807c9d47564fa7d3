// Helpers shared by the benchmark scripts: child process tracking, ports, /proc readers, stats.
// Plain ESM JavaScript on purpose: the bench runs with `node bench/throughput.js`, no build step.
import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, existsSync, readdirSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

export const HOST = '127.0.0.1';

// ---------------------------------------------------------------------------------------------
// Child processes. Every child is spawned in its own process group (detached) so that killing
// the group also kills whatever it forked (socat forks one child per connection). The set is
// killed on exit, SIGINT and SIGTERM.
const children = new Set();

function killGroup(cp, signal = 'SIGKILL') {
  if (cp.exitCode !== null || cp.signalCode !== null) {
    // The leader is gone but forked children (socat) may still live in the group.
    try { process.kill(-cp.pid, signal); } catch { /* group empty */ }
    return;
  }
  try { process.kill(-cp.pid, signal); } catch {
    try { cp.kill(signal); } catch { /* already gone */ }
  }
}

export function killAllChildren() {
  for (const cp of children) killGroup(cp, 'SIGKILL');
  children.clear();
}

let handlersInstalled = false;
export function installExitHandlers() {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', killAllChildren);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      process.stderr.write(`\n${sig}: killing child processes\n`);
      killAllChildren();
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }
}

/**
 * Spawns a tracked child. stdout is read line by line (child.lines is an array, child.onLine a
 * hook list); stderr is kept (last 8 KiB) for error messages.
 */
export function spawnChild(cmd, args, { stdin = 'pipe', env } = {}) {
  const cp = spawn(cmd, args, { detached: true, stdio: [stdin, 'pipe', 'pipe'], ...(env ? { env: { ...process.env, ...env } } : {}) });
  children.add(cp);
  cp.stderrText = '';
  cp.lineWaiters = [];
  cp.lines = [];
  cp.exited = new Promise((resolve) => {
    cp.on('exit', (code, signal) => {
      // Keep it in the set: the group may still hold forked children; killAllChildren is harmless.
      resolve({ code, signal });
      for (const w of cp.lineWaiters.splice(0)) w.reject(new Error(`${cmd} exited (code ${code}, signal ${signal}) ${cp.stderrText.trim().slice(-500)}`));
    });
  });
  cp.on('error', (err) => {
    for (const w of cp.lineWaiters.splice(0)) w.reject(err);
  });
  cp.stderr.on('data', (d) => {
    cp.stderrText = (cp.stderrText + d.toString()).slice(-8192);
  });
  readline.createInterface({ input: cp.stdout }).on('line', (line) => {
    cp.lines.push(line);
    for (const w of [...cp.lineWaiters]) {
      if (w.pred(line)) {
        cp.lineWaiters.splice(cp.lineWaiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  return cp;
}

/** Resolves with the first stdout line (from now on) matching pred; rejects on exit or timeout. */
export function waitLine(cp, pred, timeoutMs, what = 'line') {
  return new Promise((resolve, reject) => {
    if (cp.exitCode !== null || cp.signalCode !== null) {
      reject(new Error(`process already exited: ${cp.stderrText.trim().slice(-500)}`));
      return;
    }
    const w = {
      pred,
      resolve: (l) => { clearTimeout(t); resolve(l); },
      reject: (e) => { clearTimeout(t); reject(e); },
    };
    const t = setTimeout(() => {
      const i = cp.lineWaiters.indexOf(w);
      if (i >= 0) cp.lineWaiters.splice(i, 1);
      reject(new Error(`timeout after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    cp.lineWaiters.push(w);
  });
}

/** SIGTERM the group, SIGKILL after graceMs. Resolves when the leader has exited. */
export async function stopChild(cp, graceMs = 2000) {
  if (!cp) return;
  if (cp.stdin && !cp.stdin.destroyed) cp.stdin.end();
  killGroup(cp, 'SIGTERM');
  const timer = setTimeout(() => killGroup(cp, 'SIGKILL'), graceMs);
  await cp.exited;
  clearTimeout(timer);
  killGroup(cp, 'SIGKILL'); // leftovers of the group (forked children)
  children.delete(cp);
}

// ---------------------------------------------------------------------------------------------
// Ports, all on 127.0.0.1.

// A port from listen(0) is in the ephemeral range, where any connect() on the machine (the bench's
// own clients, their upstream connections, other programs) may take it as its local port between
// the probe closing and the server binding, and where TIME_WAIT sockets of earlier runs linger: the
// next run's server then fails with EADDRINUSE. So servers get ports below that range, which no
// connect() picks, that no socket in any state holds, and that this process has not handed out.

const handedOut = new Set();

function ephemeralRange() {
  try {
    const [lo, hi] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (lo > 0 && hi >= lo) return [lo, hi];
  } catch { /* not Linux */ }
  return [32768, 60999];
}

/** Local ports of every TCP socket, in any state (listening, connected, TIME_WAIT), from /proc. */
function portsTaken() {
  const taken = new Set();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text;
    try { text = readFileSync(file, 'utf8'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const local = line.trim().split(/\s+/)[1];
      if (local) taken.add(parseInt(local.slice(local.lastIndexOf(':') + 1), 16));
    }
  }
  return taken;
}

/** Binds and closes `port` on 127.0.0.1: true when that worked. */
function canBind(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, HOST, () => srv.close(() => resolve(true)));
  });
}

/** A port for a server to listen on: fresh in this process, free now, outside the ephemeral range. */
export async function freePort() {
  const [lo, hi] = ephemeralRange();
  const ranges = [[20000, lo - 1], [hi + 1, 65535]].filter(([a, b]) => b - a >= 1000);
  for (let attempt = 0; attempt < 100 && ranges.length > 0; attempt++) {
    const [a, b] = ranges[attempt % ranges.length];
    const port = a + Math.floor(Math.random() * (b - a + 1));
    if (handedOut.has(port) || portsTaken().has(port) || !(await canBind(port))) continue;
    handedOut.add(port);
    return port;
  }
  // No room outside the ephemeral range: the kernel's pick, never the same one twice.
  for (;;) {
    const port = await new Promise((resolve, reject) => {
      const srv = net.createServer();
      srv.once('error', reject);
      srv.listen(0, HOST, () => {
        const { port } = srv.address();
        srv.close(() => resolve(port));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

/**
 * True when some socket listens on 127.0.0.1:port, read from /proc/net/tcp. Used instead of a
 * probe connection: a probe through socat or haproxy would reach the receiver as a stray connection.
 */
export function isListening(port) {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  const want = [`0100007F:${hexPort}`, `00000000:${hexPort}`];
  let text;
  try { text = readFileSync('/proc/net/tcp', 'utf8'); } catch { return false; }
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length > 3 && want.includes(f[1]) && f[3] === '0A') return true;
  }
  return false;
}

export async function waitListening(port, cp, timeoutMs = 10000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (cp && (cp.exitCode !== null || cp.signalCode !== null)) {
      throw new Error(`exited before listening: ${cp.stderrText.trim().slice(-800)}`);
    }
    if (isListening(port)) return;
    await sleep(20);
  }
  throw new Error(`nothing listening on ${HOST}:${port} after ${timeoutMs} ms`);
}

// ---------------------------------------------------------------------------------------------
// CPU time from /proc/<pid>/stat: utime + stime + cutime + cstime (fields 14-17), in clock ticks.
// All threads of the process are included; cutime/cstime cover children once they are reaped.

let clkTck;
export function clockTicks() {
  if (clkTck === undefined) {
    try { clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100; } catch { clkTck = 100; }
  }
  return clkTck;
}

export function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // comm (field 2) is in parentheses and may hold spaces: split after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state), so field n is rest[n - 3].
  const ticks = Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14]);
  return ticks / clockTicks();
}

/** Per-thread CPU of pid: Map tid → { comm, user, sys } in seconds (threads alive now). */
export function threadCpu(pid) {
  const out = new Map();
  let tids = [];
  try { tids = readdirSync(`/proc/${pid}/task`); } catch { return out; }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(tid, { comm, user: Number(rest[11]) / clockTicks(), sys: Number(rest[12]) / clockTicks() });
    } catch { /* thread gone */ }
  }
  return out;
}

/**
 * Busy CPU seconds of the whole machine from /proc/stat (user+nice+system+irq+softirq, all CPUs).
 * On loopback, softirq work is charged to whichever task happens to run, so per-process figures
 * can move work between sender, forwarder and receiver; the machine-wide figure cannot.
 */
export function machineBusySeconds() {
  const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith('cpu '));
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal ...
  return (f[0] + f[1] + f[2] + f[5] + f[6]) / clockTicks();
}

/** Live (unreaped or running) children of pid, from /proc/<pid>/task/<tid>/children. */
export function childPids(pid) {
  const out = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const p = `/proc/${pid}/task/${tid}/children`;
      if (!existsSync(p)) continue;
      const t = readFileSync(p, 'utf8').trim();
      if (t) out.push(...t.split(/\s+/).map(Number));
    }
  } catch { /* process gone */ }
  return out;
}

/** `pid` (one, or an array of them) and every live descendant, each once. */
export function treePids(pid) {
  const out = [];
  const seen = new Set();
  const stack = Array.isArray(pid) ? [...pid] : [pid];
  while (stack.length) {
    const p = stack.pop();
    if (seen.has(p)) continue;
    seen.add(p);
    out.push(p);
    stack.push(...childPids(p));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

export function median(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

export function which(cmd) {
  for (const dir of (process.env.PATH || '').split(':').concat(['/usr/sbin', '/sbin'])) {
    if (dir && existsSync(`${dir}/${cmd}`)) return `${dir}/${cmd}`;
  }
  return null;
}

/**
 * Compiles bench/<name>.c (with bench.h) once per source version into .bench-out/<name>-<hash>
 * and returns the binary's path. Throws with the compiler's message when cc fails.
 */
export function compileC(cc, name) {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const src = path.join(here, `${name}.c`);
  const flags = ['-O2', '-pthread'];
  const hash = createHash('sha256')
    .update(readFileSync(src))
    .update(readFileSync(path.join(here, 'bench.h')))
    .update(flags.join(' '))
    .digest('hex')
    .slice(0, 16);
  const dir = path.join(here, '..', '.bench-out');
  const bin = path.join(dir, `${name}-${hash}`);
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  const tmp = `${bin}.tmp-${process.pid}`;
  try {
    execFileSync(cc, [...flags, '-o', tmp, src], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    rmSync(tmp, { force: true });
    throw new Error(`cc ${flags.join(' ')} bench/${name}.c failed: ${(err.stderr || err.message).toString().trim().slice(-800)}`);
  }
  renameSync(tmp, bin); // atomic: a concurrent run sees the whole binary or none
  return bin;
}
