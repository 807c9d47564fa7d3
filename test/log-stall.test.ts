// A log reader that stops reading (a full pipe: a stalled journal, `| less` left open) must not stop
// the service: connections go on being served, lines past the bound are dropped, and SIGTERM still
// stops the process.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { SocksClient } from 'socks';
import { afterEach, describe, expect, it } from 'vitest';
import * as h from './helpers.js';
import { CLI, freePort } from './cli-harness.js';

const hasMkfifo = spawnSync('mkfifo', ['--version']).status === 0;
const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

async function waitListening(port: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ host: h.HOST, port }, () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listening on ${port} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** One SOCKS5 CONNECT to the echo server through the proxy: 1 KiB out, the same back. */
async function echoThrough(proxyPort: number, echoPort: number, seed: number): Promise<boolean> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: h.HOST, port: proxyPort, type: 5 },
    command: 'connect',
    destination: { host: h.HOST, port: echoPort },
    timeout: 10_000,
  });
  const sent = h.patternBytes(seed, 1024);
  const got: Buffer[] = [];
  let n = 0;
  await new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      got.push(chunk);
      n += chunk.length;
      if (n >= sent.length) resolve();
    });
    socket.on('error', reject);
    socket.write(sent);
  });
  socket.destroy();
  return Buffer.concat(got).equals(sent);
}

describe.skipIf(!hasMkfifo)('a stalled log reader (mkfifo)', () => {
  it('keeps serving connections while stdout is full, and still stops on SIGTERM', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splicer-logstall-'));
    const fifo = path.join(dir, 'stdout');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    // The read end is opened (so the writer can open) and never read: the pipe fills at 64 KiB.
    const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const writer = fs.openSync(fifo, 'w');
    const echo = await h.startEchoServer();
    const port = await freePort();
    const child = spawn(process.execPath, [CLI, 'proxy', '--listen', `127.0.0.1:${port}`, '--log-level', 'debug', '--grace', '0'], { stdio: ['ignore', writer, 'pipe'] });
    fs.closeSync(writer);
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    cleanups.push(() => {
      child.kill('SIGKILL');
      fs.closeSync(reader);
      fs.rmSync(dir, { recursive: true, force: true });
      void echo.close();
    });
    await waitListening(port, 15_000);

    // Each connection logs a few hundred bytes at debug: 800 of them overflow the pipe several times.
    let intact = 0;
    for (let batch = 0; batch < 40; batch++) {
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => echoThrough(port, echo.port, batch * 20 + i)));
      intact += results.filter(Boolean).length;
    }
    expect(intact, 'connections echoed intact while nobody read the log').toBe(800);
    const buffered = Buffer.alloc(1 << 20);

    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    const exit = await exited;
    clearTimeout(timer);
    // Its last lines cannot be written: it ends by SIGTERM's default action rather than wait for them.
    expect([JSON.stringify({ code: 0, signal: null }), JSON.stringify({ code: null, signal: 'SIGTERM' })], `stderr: ${stderr}`).toContain(JSON.stringify(exit));

    // The pipe filled (16 slots of a page; a write that does not fit the last page's room takes a
    // new slot, so "full" is from 32 to 64 KiB of lines; 800 connections log several times that), and
    // what reached it is whole JSON lines.
    const first = fs.readSync(reader, buffered, 0, buffered.length, null);
    expect(first).toBeGreaterThan(16 * 1024);
    const lines = buffered.subarray(0, first).toString().split('\n');
    lines.pop(); // the last may be cut where the pipe filled
    expect(lines.length).toBeGreaterThan(50);
    for (const line of lines.slice(0, 50)) expect(() => JSON.parse(line)).not.toThrow();
  }, 120_000);
});
