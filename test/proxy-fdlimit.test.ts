// Running out of fds must not take the listener down: with a low RLIMIT_NOFILE the proxy is
// flooded past its limit, then serves a SOCKS5 client once the flood is gone.
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { describe, expect, it } from 'vitest';
import { within } from './helpers.js';
import { needsTool } from './policy.js';

const child = path.join(import.meta.dirname, 'fixtures', 'proxy-child.mjs');

function connect(port: number): Promise<net.Socket | null> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
    socket.on('error', () => resolve(null));
  });
}

/** A SOCKS5 greeting's reply, or null when the connection fails or closes first. */
async function greet(port: number): Promise<Buffer | null> {
  const client = await connect(port);
  if (!client) return null;
  try {
    return await new Promise<Buffer | null>((resolve) => {
      client.once('data', resolve);
      client.once('close', () => resolve(null));
      client.write(Buffer.from([0x05, 0x01, 0x00]));
    });
  } finally {
    client.destroy();
  }
}

describe.runIf(process.platform === 'linux')('accept() out of fds', () => {
  it('keeps listening through EMFILE and serves again afterwards', async (ctx) => {
    needsTool(ctx, 'prlimit', 'util-linux');
    const proxy = spawn('prlimit', ['--nofile=64:64', process.execPath, child], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const port = await new Promise<number>((resolve, reject) => {
        readline.createInterface({ input: proxy.stdout! }).on('line', (line) => {
          const match = /^PORT (\d+)$/.exec(line);
          if (match) resolve(Number(match[1]));
        });
        proxy.once('exit', (code) => reject(new Error(`proxy exited early (${code})`)));
      });
      // Twice its fd limit in idle connections: accept() fails with EMFILE while they are open.
      const flood = await Promise.all(Array.from({ length: 128 }, () => connect(port)));
      // Out of fds, libuv accepts and closes what it cannot keep: a flood connection closed well
      // before the 2 s handshake timeout shows the proxy did reach its limit.
      const dropped = flood.map((socket) => new Promise<void>((resolve) => socket?.resume().once('close', () => resolve())));
      await within(Promise.race(dropped), 10_000, 'a flood connection dropped at the fd limit');
      expect(proxy.exitCode, 'the proxy survived its fd limit').toBeNull();
      for (const socket of flood) socket?.destroy();

      // Its fds come back as it sees the flood close; until then a greeting may go unanswered.
      let reply: Buffer | null = null;
      const deadline = Date.now() + 20_000;
      while (!reply && Date.now() < deadline) {
        reply = await greet(port);
        if (!reply) await new Promise((r) => setTimeout(r, 50));
      }
      expect(reply && [...reply], 'the proxy serves again').toEqual([0x05, 0x00]);
      expect(proxy.exitCode, 'the proxy is still running').toBeNull();
    } finally {
      proxy.kill('SIGTERM');
    }
  });
});
