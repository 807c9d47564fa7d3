// Running out of fds must not take the listener down: with a low RLIMIT_NOFILE the proxy is
// flooded past its limit, then serves a SOCKS5 client once the flood is gone.
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { describe, expect, it } from 'vitest';
import { needsTool } from './policy.js';

const child = path.join(import.meta.dirname, 'fixtures', 'proxy-child.mjs');

function connect(port: number): Promise<net.Socket | null> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
    socket.on('error', () => resolve(null));
  });
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
      await new Promise((r) => setTimeout(r, 300));
      for (const socket of flood) socket?.destroy();
      await new Promise((r) => setTimeout(r, 500));

      const client = await connect(port);
      expect(client, 'the proxy accepts again').not.toBeNull();
      const reply = await new Promise<Buffer>((resolve, reject) => {
        client!.once('data', resolve);
        client!.once('error', reject);
        client!.write(Buffer.from([0x05, 0x01, 0x00]));
      });
      client!.destroy();
      expect([...reply]).toEqual([0x05, 0x00]);
      expect(proxy.exitCode, 'the proxy is still running').toBeNull();
    } finally {
      proxy.kill('SIGTERM');
    }
  });
});
