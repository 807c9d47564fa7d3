// --workers N: a supervisor and N worker processes, each with its own SO_REUSEPORT socket on the
// same port, run as a user runs them (dist/cli/main.js in a child). Real sockets on 127.0.0.1, the
// npm `socks` client, bytes hashed end to end; which worker holds a connection is read from /proc.
import fs from 'node:fs';
import type net from 'node:net';
import os from 'node:os';
import { SocksClient } from 'socks';
import { afterEach, describe, expect, it } from 'vitest';
import { portOf, runCli, startCli, type CliProcess, type LogLine } from './cli-harness.js';
import * as h from './helpers.js';
import { KiB } from './helpers.js';
import { needsSplice } from './policy.js';
import { workersArg } from '../src/cli/workers.js';

afterEach(h.closeAll);

// Two Node processes start one after the other (worker 0 first): seconds on a busy 2-core machine.
const STARTUP_MS = 40_000;

interface Workers extends CliProcess {
  port: number;
  pids: number[];
}

/** `splicer COMMAND --listen 127.0.0.1:0 --workers 2 ...args`, once the supervisor said both serve. */
async function startWorkers(command: string, args: string[]): Promise<Workers> {
  const run = startCli([command, '--listen', '127.0.0.1:0', '--workers', '2', ...args]);
  const started = await run.waitFor('workers started', undefined, STARTUP_MS);
  return { ...run, port: portOf((started.listen as string[])[0]), pids: started.pids as number[] };
}

const alive = (pid: number) => fs.existsSync(`/proc/${pid}`);
const parentOf = (pid: number) => Number(fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]);

/** The socket inodes a process holds. */
function socketInodes(pid: number): Set<string> {
  const inodes = new Set<string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (link.startsWith('socket:[')) inodes.add(link.slice(8, -1));
    } catch {
      // closed meanwhile
    }
  }
  return inodes;
}

/** Its fds but pipes: sockets, epoll sets, eventfds. Idle pooled pipes of the splice engine are not a leak. */
function fdsButPipes(pid: number): number {
  let n = 0;
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (!fs.readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('pipe:')) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

/** Which of `pids` holds the accepted end of the client connection from `clientPort` to `serverPort`. */
function ownerOf(clientPort: number, serverPort: number, pids: number[]): number | undefined {
  const hex = (port: number) => port.toString(16).toUpperCase().padStart(4, '0');
  const line = fs
    .readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .find((f) => f[1]?.endsWith(`:${hex(serverPort)}`) && f[2]?.endsWith(`:${hex(clientPort)}`));
  const inode = line?.[9];
  return inode ? pids.find((pid) => socketInodes(pid).has(inode)) : undefined;
}

/** A SOCKS5 CONNECT through the proxy to 127.0.0.1:port. */
async function socks5(proxyPort: number, port: number): Promise<net.Socket> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: h.HOST, port: proxyPort, type: 5 },
    command: 'connect',
    destination: { host: h.HOST, port },
    timeout: 10_000,
  });
  h.track(socket);
  h.rememberPorts(socket);
  return socket;
}

/** Sends `size` random bytes through `socket` to an echo server and checks the echo by hash. */
async function echoedIntact(socket: net.Socket, seed: number, size = 64 * KiB): Promise<void> {
  const [sent, got] = await Promise.all([h.writeRandom(socket, seed, size), h.hashUntilEnd(socket)]);
  expect(got).toEqual({ bytes: sent.bytes, sha: sent.sha });
}

/** `count` connections, `parallel` at a time, each echoed intact; `open` makes one. */
async function batch(count: number, parallel: number, open: () => Promise<net.Socket>, seed = 0): Promise<void> {
  for (let i = 0; i < count; i += parallel) {
    await Promise.all(Array.from({ length: Math.min(parallel, count - i) }, async (_, j) => echoedIntact(await open(), seed + i + j)));
  }
}

/** The `worker` of the next `count` lines with this msg. */
async function workersOf(run: CliProcess, msg: string, count: number): Promise<Set<unknown>> {
  const seen = new Set<unknown>();
  for (let i = 0; i < count; i++) seen.add((await run.waitFor(msg)).worker);
  return seen;
}

/** Polls `read` until it gives the same value twice in a row (a process done closing), at most `ms`. */
async function settled(read: () => number, ms = 5_000): Promise<number> {
  let last = -1;
  await h.waitFor(() => last === (last = read()), ms);
  return last;
}

describe('--workers 2 (SO_REUSEPORT, the addon)', () => {
  it('proxy: both workers accept and carry bytes intact, each its own child with its own listening socket, fds back to baseline', async (ctx) => {
    needsSplice(ctx);
    const echo = await h.startEchoServer();
    const run = await startWorkers('proxy', []);
    const supervisor = run.child.pid!;
    expect(new Set(run.pids).size).toBe(2);
    for (const pid of run.pids) expect(parentOf(pid)).toBe(supervisor);
    // One startup line per worker, tagged; the same port for both.
    const listening = [await run.waitFor('proxy listening'), await run.waitFor('proxy listening')];
    expect(new Set(listening.map((l) => l.worker))).toEqual(new Set([0, 1]));
    for (const line of listening) expect(line.listen).toEqual([`127.0.0.1:${run.port}`]);
    // The supervisor holds no socket at all (a listening one that never accepts would take its share and hang it).
    const tcp = ['tcp', 'tcp6'].flatMap((file) => fs.readFileSync(`/proc/net/${file}`, 'utf8').split('\n').map((l) => l.trim().split(/\s+/)[9]));
    expect([...socketInodes(supervisor)].filter((inode) => tcp.includes(inode))).toEqual([]);
    for (const pid of run.pids) expect(fs.readFileSync(`/proc/${pid}/net/tcp`, 'utf8')).toMatch(new RegExp(`:${run.port.toString(16).toUpperCase().padStart(4, '0')} 00000000:0000 0A `));

    // 40 connections: the kernel hashes each to one socket of the group; all on one worker is 2^-39.
    await batch(40, 8, () => socks5(run.port, echo.port));
    expect(await workersOf(run, 'connection closed', 40)).toEqual(new Set([0, 1]));

    const baseline = run.pids.map((pid) => settled(() => fdsButPipes(pid)));
    const before = await Promise.all(baseline);
    await batch(40, 8, () => socks5(run.port, echo.port), 100);
    await workersOf(run, 'connection closed', 40);
    for (const [i, pid] of run.pids.entries()) {
      await h.waitFor(() => fdsButPipes(pid) <= before[i]!, 5_000);
      expect(fdsButPipes(pid), `worker ${i} (pid ${pid}) fds`).toBeLessThanOrEqual(before[i]!);
    }
    expect(await run.stop()).toBe(0);
    for (const pid of run.pids) expect(alive(pid)).toBe(false);
  });

  it('proxy: a worker killed with SIGKILL is restarted and the service goes on', async (ctx) => {
    needsSplice(ctx);
    const echo = await h.startEchoServer();
    const run = await startWorkers('proxy', []);
    const [victim, survivor] = run.pids as [number, number];
    process.kill(victim, 'SIGKILL');
    const exited = await run.waitFor('worker exited', (l) => l.pid === victim);
    expect(exited).toMatchObject({ index: 0, signal: 'SIGKILL' });
    // Meanwhile the other worker's socket takes every connection: none is left hanging on the dead one's.
    await batch(8, 4, () => socks5(run.port, echo.port));
    const restarted = await run.waitFor('worker restarted', undefined, STARTUP_MS);
    expect(restarted.index).toBe(0);
    const fresh = restarted.pid as number;
    expect(fresh).not.toBe(victim);
    expect(parentOf(fresh)).toBe(run.child.pid);
    expect(alive(survivor)).toBe(true);
    await batch(40, 8, () => socks5(run.port, echo.port), 200);
    // The restarted worker serves too: of the last 40 connections, some were its.
    const closed = await Promise.all(Array.from({ length: 48 }, () => run.waitFor('connection closed')));
    expect(new Set(closed.slice(8).map((l) => l.worker))).toEqual(new Set([0, 1]));
    expect(await run.stop()).toBe(0);
    for (const pid of [fresh, survivor]) expect(alive(pid)).toBe(false);
  });

  it('proxy: SIGTERM drains both workers: connections in flight on each finish within the grace, then every process exits 0', async (ctx) => {
    needsSplice(ctx);
    const echo = await h.startEchoServer();
    const run = await startWorkers('proxy', ['--grace', '20']);
    // Open connections until each worker holds at least one (bounded).
    const open: { socket: net.Socket; owner: number | undefined }[] = [];
    for (let i = 0; i < 40 && !run.pids.every((pid) => open.some((c) => c.owner === pid)); i++) {
      const socket = await socks5(run.port, echo.port);
      await h.waitFor(() => ownerOf(h.localPortOf(socket)!, run.port, run.pids) !== undefined, 2_000);
      open.push({ socket, owner: ownerOf(h.localPortOf(socket)!, run.port, run.pids) });
    }
    for (const pid of run.pids) expect(open.some((c) => c.owner === pid), `a connection held by worker pid ${pid}`).toBe(true);
    // Half of each stream before the signal, the rest after it.
    const sends = open.map(({ socket }, i) => {
      const got = h.hashUntilEnd(socket);
      const half = h.patternBytes(300 + i, 32 * KiB);
      const rest = h.patternBytes(600 + i, 32 * KiB);
      socket.write(half);
      return { socket, got, rest, sha: h.sha256(Buffer.concat([half, rest])) };
    });
    run.child.kill('SIGTERM');
    const stopping = [await run.waitFor('stopping', (l) => l.worker === 0), await run.waitFor('stopping', (l) => l.worker === 1)];
    expect(stopping.reduce((n, l) => n + (l.active as number), 0)).toBe(open.length);
    for (const { socket, rest } of sends) socket.end(rest);
    for (const { got, sha } of sends) expect(await got).toEqual({ bytes: 64 * KiB, sha });
    expect(await run.exited).toBe(0);
    expect(run.lines.filter((l) => l.msg === 'connection closed' && l.outcome === 'eof')).toHaveLength(open.length);
    expect(run.lines.at(-1)).toMatchObject({ worker: 'supervisor', msg: 'stopped', exitCode: 0 });
    for (const pid of run.pids) expect(alive(pid)).toBe(false);
  });

  it('forward: both workers carry pairs intact', async (ctx) => {
    needsSplice(ctx);
    const echo = await h.startEchoServer();
    const run = await startWorkers('forward', ['--to', `127.0.0.1:${echo.port}`]);
    expect(new Set([(await run.waitFor('forwarding')).worker, (await run.waitFor('forwarding')).worker])).toEqual(new Set([0, 1]));
    await batch(40, 8, () => h.connectTo(run.port));
    const closed = await Promise.all(Array.from({ length: 40 }, () => run.waitFor('connection closed')));
    expect(new Set(closed.map((l) => l.worker))).toEqual(new Set([0, 1]));
    expect(closed.every((l) => l.reason === 'eof' && l.engine === 'splice')).toBe(true);
    expect(await run.stop()).toBe(0);
  });

  it('relay: both workers carry pairs intact', async (ctx) => {
    needsSplice(ctx);
    const echo = await h.startEchoServer();
    const run = await startWorkers('relay', ['--to', `127.0.0.1:${echo.port}`]);
    expect(new Set([(await run.waitFor('relay listening')).worker, (await run.waitFor('relay listening')).worker])).toEqual(new Set([0, 1]));
    await batch(40, 8, () => h.connectTo(run.port));
    const closed = await Promise.all(Array.from({ length: 40 }, () => run.waitFor('connection closed')));
    expect(new Set(closed.map((l) => l.worker))).toEqual(new Set([0, 1]));
    expect(closed.every((l) => l.reason === 'eof')).toBe(true);
    expect(await run.stop()).toBe(0);
  });

  it('proxy: SIGHUP goes to every worker, the supervisor stays, and the group serves on', async (ctx) => {
    needsSplice(ctx);
    const echo = await h.startEchoServer();
    const run = await startWorkers('proxy', []);
    run.child.kill('SIGHUP');
    const passed = await run.waitFor('SIGHUP passed to the workers');
    expect(new Set(passed.pids as number[])).toEqual(new Set(run.pids));
    // Whatever a worker does with SIGHUP (today Node's default ends it, and it is started again), the
    // port is served again soon after.
    const deadline = Date.now() + STARTUP_MS;
    for (;;) {
      try {
        await batch(4, 4, () => socks5(run.port, echo.port));
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await h.sleep(200);
      }
    }
    expect(alive(run.child.pid!)).toBe(true);
    expect(await run.stop()).toBe(0);
  });

  it('workers stop (draining) when the supervisor is killed outright', async (ctx) => {
    needsSplice(ctx);
    const run = await startWorkers('forward', ['--to', '127.0.0.1:9']);
    run.child.kill('SIGKILL');
    for (const pid of run.pids) expect(await h.waitFor(() => !alive(pid), 10_000), `worker pid ${pid} exits`).toBe(true);
  });

  it('a port already taken: worker 0 cannot listen, the supervisor exits 1 saying so, the others never start', async (ctx) => {
    needsSplice(ctx);
    const taken = await h.startServer();
    const result = runCli(['forward', '--listen', `127.0.0.1:${taken.port}`, '--to', '127.0.0.1:9', '--workers', '2'], { timeout: STARTUP_MS });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('EADDRINUSE');
    expect(result.stderr).toContain(`127.0.0.1:${taken.port}`);
    expect(result.stderr).toContain('worker 0 exited (code 1) before it was listening');
    const lines = result.stdout.trim().split('\n').map((l) => JSON.parse(l) as LogLine);
    expect(lines.some((l) => l.worker === 1)).toBe(false);
  });
});

describe('--workers refused where it cannot hold', () => {
  it.each([
    ['0', '--workers must be from 1 to 256 or auto, got 0'],
    ['x', '--workers must be a whole number or auto, got "x"'],
    ['1.5', '--workers must be a whole number or auto, got "1.5"'],
  ])('--workers %s', (value, message) => {
    for (const command of [['proxy'], ['forward', '--to', '127.0.0.1:9'], ['relay', '--listen', ':0', '--to', '127.0.0.1:9']]) {
      const { status, stderr } = runCli([...command, '--workers', value]);
      expect(status).not.toBe(0);
      expect(stderr).toContain(message);
    }
  });

  it('--workers auto is one per CPU this process may use', () => {
    expect(workersArg('auto')).toBe(Math.min(os.availableParallelism(), 256));
    expect(workersArg(' 3 ')).toBe(3);
  });

  it('relay --api: its state lives in one process', () => {
    const { status, stderr } = runCli(['relay', '--workers', '2', '--api']);
    expect(status).toBe(1);
    expect(stderr).toContain('--workers: the relay API holds state');
  });

  it('relay --record: one process writes a recording', () => {
    const { status, stderr } = runCli(['relay', '--listen', ':0', '--to', '127.0.0.1:9', '--record', '/tmp/x.pcap', '--workers', '2']);
    expect(status).toBe(1);
    expect(stderr).toContain('--workers: a recording is written by one process');
  });

  it.each([['server', '--token', 'x'.repeat(32)], ['client', '--server', '127.0.0.1:9', '--token', 'x'.repeat(32)]])('tunnel %s', async (role, ...args) => {
    const { status, stderr } = runCli(['tunnel', role, ...args, '--workers', '2']);
    expect(status).not.toBe(0);
    expect(stderr).toContain(`the tunnel ${role} holds`);
    expect(stderr).toContain('--workers is not offered here');
  });

  it('without the addon: --workers 2 fails at startup naming why, --workers 1 runs as before', async () => {
    const env = { SPLICER_DISABLE_NATIVE: '1' };
    const refused = runCli(['proxy', '--listen', '127.0.0.1:0', '--workers', '2'], { env });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain('--workers needs a listening socket of its own per worker (SO_REUSEPORT), made by the native addon');
    expect(refused.stderr).toContain('disabled by SPLICER_DISABLE_NATIVE=1');
    const single = startCli(['proxy', '--listen', '127.0.0.1:0', '--workers', '1'], { env });
    const started = await single.waitFor('proxy listening');
    expect(started.worker).toBeUndefined();
    expect(started.engine).toBe('js');
    expect(await single.stop()).toBe(0);
  });
});
