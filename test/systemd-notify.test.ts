// systemd's notify protocol, against a fake NOTIFY_SOCKET: a unix datagram receiver (python3,
// test/fixtures/notify-receiver.py) that reports each datagram and the pid that sent it. The
// commands run as a user runs them (dist/cli/main.js in a child process).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { stringify as toYaml } from 'yaml';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startCli } from './cli-harness.js';
import * as h from './helpers.js';
import { monotonicUsec } from '../src/ops/systemd-notify.js';
import { needsTool, spliceSkipReason } from './policy.js';

interface Datagram {
  pid: number | null;
  text: string;
}

interface Receiver {
  datagrams: Datagram[];
  /** The next datagram (after those already taken) whose text matches; 20 s at most. */
  next(match: (text: string) => boolean, what: string): Promise<Datagram>;
}

const RECEIVER = path.join(import.meta.dirname, 'fixtures', 'notify-receiver.py');
const receivers = new Set<ChildProcess>();
afterEach(async () => {
  for (const child of receivers) child.kill('SIGKILL');
  receivers.clear();
  await h.closeAll();
});

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splicer-notify-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

async function startReceiver(socketName: string): Promise<Receiver> {
  const child = spawn('python3', [RECEIVER, socketName], { stdio: ['ignore', 'pipe', 'inherit'] });
  receivers.add(child);
  const datagrams: Datagram[] = [];
  let bound: () => void;
  const ready = new Promise<void>((resolve) => (bound = resolve));
  readline.createInterface({ input: child.stdout! }).on('line', (line) => {
    const parsed = JSON.parse(line) as Datagram & { bound?: boolean };
    if (parsed.bound) bound();
    else datagrams.push(parsed);
  });
  await h.within(ready, 20_000, 'the notify receiver to bind');
  let taken = 0;
  return {
    datagrams,
    async next(match, what) {
      const deadline = Date.now() + 20_000;
      for (;;) {
        const index = datagrams.findIndex((d, i) => i >= taken && match(d.text));
        if (index >= 0) {
          taken = index + 1;
          return datagrams[index]!;
        }
        if (Date.now() > deadline) throw new Error(`no ${what} datagram within 20 s; got ${JSON.stringify(datagrams.map((d) => d.text))}`);
        await h.sleep(20);
      }
    },
  };
}

const notWatchdog = (text: string) => text !== 'WATCHDOG=1';

describe('systemd notify', () => {
  beforeEach((ctx) => {
    needsTool(ctx, 'python3', 'python3');
    if (spliceSkipReason) ctx.skip(`the notify datagram is sent by the addon: ${spliceSkipReason}`);
  });

  it('READY=1 once listening, RELOADING=1 with MONOTONIC_USEC then READY=1 around SIGHUP (good or bad file), WATCHDOG=1, STOPPING=1 on SIGTERM', async () => {
    const socketPath = path.join(dir, 'notify.sock');
    const receiver = await startReceiver(socketPath);
    const config = path.join(dir, 'proxy.yaml');
    fs.writeFileSync(config, toYaml({ listen: ['127.0.0.1:0'] }));
    const proxy = startCli(['proxy', '--config', config], { env: { NOTIFY_SOCKET: socketPath, WATCHDOG_USEC: '200000' } });
    await proxy.waitFor('proxy listening');
    const ready = await receiver.next(notWatchdog, 'READY');
    expect(ready).toEqual({ pid: proxy.child.pid, text: 'READY=1' });

    for (const file of [{ listen: ['127.0.0.1:0'], 'max-connections': 9 }, { listen: ['127.0.0.1:0'], 'max-connections': 0 }]) {
      fs.writeFileSync(config, toYaml(file));
      const before = monotonicUsec();
      proxy.child.kill('SIGHUP');
      const reloading = await receiver.next(notWatchdog, 'RELOADING');
      const after = monotonicUsec();
      const [first, second, ...rest] = reloading.text.split('\n');
      expect(first).toBe('RELOADING=1');
      // The same clock as ours (CLOCK_MONOTONIC), read between our two readings.
      const usec = BigInt(second!.replace(/^MONOTONIC_USEC=/, ''));
      expect(second).toMatch(/^MONOTONIC_USEC=\d+$/);
      expect(usec >= before && usec <= after).toBe(true);
      expect(rest).toEqual([]);
      expect((await receiver.next(notWatchdog, 'READY after the reload')).text).toBe('READY=1');
    }
    await proxy.waitFor('config reload failed; the running config is kept');

    // 200 ms watchdog: a ping every 100 ms.
    const pings = receiver.datagrams.filter((d) => d.text === 'WATCHDOG=1').length;
    await h.sleep(600);
    expect(receiver.datagrams.filter((d) => d.text === 'WATCHDOG=1').length).toBeGreaterThanOrEqual(pings + 2);

    proxy.child.kill('SIGTERM');
    expect((await receiver.next(notWatchdog, 'STOPPING')).text).toBe('STOPPING=1');
    expect(await proxy.exited).toBe(0);
    expect(receiver.datagrams.every((d) => d.pid === proxy.child.pid)).toBe(true);
  });

  it('reaches an abstract socket (@name), and sends no watchdog ping unasked', async () => {
    const name = `@splicer-notify-test-${process.pid}-${Date.now()}`;
    const receiver = await startReceiver(name);
    const upstream = await h.startEchoServer();
    h.onCleanup(() => void upstream.close());
    const forward = startCli(['forward', '--listen', '127.0.0.1:0', '--to', `127.0.0.1:${upstream.port}`], { env: { NOTIFY_SOCKET: name } });
    await forward.waitFor('forwarding');
    expect((await receiver.next(() => true, 'READY')).text).toBe('READY=1');
    await h.sleep(300);
    expect(await forward.stop()).toBe(0);
    expect(receiver.datagrams.map((d) => d.text)).toEqual(['READY=1', 'STOPPING=1']);
  });

  it('with --workers, only the supervisor speaks: READY=1 once every worker listens, and SIGHUP is checked before the workers hear it', async () => {
    const socketPath = path.join(dir, 'workers.sock');
    const receiver = await startReceiver(socketPath);
    const config = path.join(dir, 'workers.yaml');
    fs.writeFileSync(config, toYaml({ listen: ['127.0.0.1:0'], workers: 2 }));
    const supervisor = startCli(['proxy', '--config', config], { env: { NOTIFY_SOCKET: socketPath, WATCHDOG_USEC: '200000' } });
    await supervisor.waitFor('workers started', undefined, 40_000);
    expect((await receiver.next(notWatchdog, 'READY')).text).toBe('READY=1');

    fs.writeFileSync(config, toYaml({ listen: ['127.0.0.1:0'], workers: 2, 'max-per-client': 'many' }));
    supervisor.child.kill('SIGHUP');
    const refused = await supervisor.waitFor('config reload failed; the workers keep the running config');
    expect(refused.err).toContain('max-per-client: --max-per-client must be a whole number, got "many"');
    expect((await receiver.next(notWatchdog, 'RELOADING')).text).toMatch(/^RELOADING=1\nMONOTONIC_USEC=\d+$/);
    expect((await receiver.next(notWatchdog, 'READY')).text).toBe('READY=1');

    fs.writeFileSync(config, toYaml({ listen: ['127.0.0.1:0'], workers: 2, 'max-per-client': 5 }));
    supervisor.child.kill('SIGHUP');
    // Each worker reloads on its own.
    await supervisor.waitFor('config reloaded', (line) => line.worker === 0);
    await supervisor.waitFor('config reloaded', (line) => line.worker === 1);
    expect(supervisor.lines.some((line) => line.msg === 'config reloaded' && line.worker === undefined)).toBe(false);

    expect(await supervisor.stop()).toBe(0);
    expect(receiver.datagrams.filter(notWatchdogDatagram).map((d) => d.text.split('\n')[0])).toEqual(['READY=1', 'RELOADING=1', 'READY=1', 'RELOADING=1', 'READY=1', 'STOPPING=1']);
    expect(receiver.datagrams.every((d) => d.pid === supervisor.child.pid)).toBe(true);
  });
});

const notWatchdogDatagram = (d: Datagram) => notWatchdog(d.text);

describe('systemd notify without the addon', () => {
  it('says once that notifications are unavailable, and serves all the same', async () => {
    const forward = startCli(['forward', '--listen', '127.0.0.1:0', '--to', '127.0.0.1:9'], {
      env: { NOTIFY_SOCKET: path.join(dir, 'nobody.sock'), SPLICER_DISABLE_NATIVE: '1' },
    });
    const warned = await forward.waitFor('NOTIFY_SOCKET is set, but systemd notifications need the native addon, which is not available here');
    expect(String(warned.reason)).toContain('SPLICER_DISABLE_NATIVE');
    await forward.waitFor('forwarding');
    expect(await forward.stop()).toBe(0);
  });
});
