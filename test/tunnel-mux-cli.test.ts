// `splicer tunnel client --mux` run as a user runs it: child processes, curl, a config file, SIGHUP.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { portOf, runCli, startCli } from './cli-harness.js';
import * as h from './helpers.js';
import { needsTool } from './policy.js';

const TOKEN = 'cli-mux-token-0123456789abcdef';
const env = { SPLICER_TUNNEL_TOKEN: TOKEN };
const sha = (data: Buffer) => crypto.createHash('sha256').update(data).digest('hex');

function curl(url: string): Promise<{ status: number; stdout: Buffer }> {
  return new Promise((resolve) => {
    const child = spawn('curl', ['-sS', '--max-time', '10', url]);
    const chunks: Buffer[] = [];
    child.stdout.on('data', (chunk) => chunks.push(chunk));
    child.on('close', (status) => resolve({ status: status ?? -1, stdout: Buffer.concat(chunks) }));
  });
}

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splicer-tunnel-mux-cli-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function writeConfig(name: string, config: unknown): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, JSON.stringify(config));
  return file;
}

describe('splicer tunnel client --mux', () => {
  it('refuses what does not apply with --mux, naming the flag, on the command line and in --config', () => {
    const base = ['tunnel', 'client', '--server', '127.0.0.1:1', '--expose', 'web=127.0.0.1:80', '--mux'];
    const pool = runCli([...base, '--pool', '2'], { env });
    expect(pool.status).toBe(1);
    expect(pool.stderr).toMatch(/--pool does not apply with --mux/);
    const dataPath = runCli([...base, '--data-path', 'node'], { env });
    expect(dataPath.status).toBe(1);
    expect(dataPath.stderr).toMatch(/--data-path does not apply with --mux/);
    const splice = runCli([...base, '--engine', 'splice'], { env });
    expect(splice.status).toBe(1);
    expect(splice.stderr).toMatch(/--engine splice cannot carry mux streams/);
    const window = runCli([...base, '--mux-window', '1k'], { env });
    expect(window.status).not.toBe(0);
    expect(window.stderr).toMatch(/--mux-window must be from 262144/);
    const file = writeConfig('bad.json', { server: '127.0.0.1:1', expose: ['web=127.0.0.1:80'], mux: true, pool: 3 });
    const fromFile = runCli(['tunnel', 'client', '--config', file], { env });
    expect(fromFile.status).toBe(1);
    expect(fromFile.stderr).toMatch(/--pool does not apply with --mux/);
  });

  describe('two processes', () => {
    beforeEach((ctx) => needsTool(ctx, 'curl'));
    const body = crypto.randomBytes(2 << 20);
    let origin: http.Server;
    let originPort: number;
    let originConnections = 0;
    beforeAll(async () => {
      origin = http.createServer((req, res) => {
        res.setHeader('content-length', body.length);
        res.end(body);
      });
      origin.on('connection', () => originConnections++);
      await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
      originPort = (origin.address() as net.AddressInfo).port;
    });
    afterAll(() => new Promise<void>((resolve) => origin.close(() => resolve())));

    it('publishes a service for curl over one mux connection (mux: true in --config), and keeps it across SIGHUP', async () => {
      const echo = await h.startEchoServer();
      const server = startCli(['tunnel', 'server', '--listen', '127.0.0.1:0', '--heartbeat', '0.2', '--heartbeat-timeout', '1', '--grace', '0'], { env });
      const listen = (await server.waitFor('tunnel server listening')).listen as string;
      const config = { server: listen, 'token-file': writeToken(), expose: [`web=127.0.0.1:${originPort}@0`], mux: true, 'mux-window': '1m', 'mux-keepalive': 5, 'backoff-max': 0.3, grace: 0 };
      const file = writeConfig('client.json', config);
      const client = startCli(['tunnel', 'client', '--config', file]);
      expect(await client.waitFor('connected')).toMatchObject({ mux: true });
      await client.waitFor('mux connection open');
      expect(await server.waitFor('session open')).toMatchObject({ mux: true, pool: 0 });
      const port = portOf((await client.waitFor('tunnel up')).remote);

      const first = await curl(`http://127.0.0.1:${port}/`);
      expect(first.status).toBe(0);
      expect(sha(first.stdout)).toBe(sha(body));
      const record = await server.waitFor('connection closed');
      expect(record).toMatchObject({ tunnel: 'web', reason: 'eof', engine: 'js' });
      expect(record.bytesDown).toBeGreaterThan(body.length);
      expect(await client.waitFor('connection closed')).toMatchObject({ tunnel: 'web', reason: 'eof', engine: 'js', bytesDown: record.bytesDown, streamId: record.streamId });

      // SIGHUP with one more service: a new client logs in (with its own mux connection); a stream
      // the old one carries goes on (its request is finished after the reload).
      const before = originConnections;
      const open = await h.connectTo(port);
      const reply = h.collectUntilEnd(open);
      open.write('GET / HTTP/1.0\r\n');
      // The stream exists end to end once the origin has its connection: only then is the reload sent.
      expect(await h.waitFor(() => originConnections > before, 10_000)).toBe(true);
      fs.writeFileSync(file, JSON.stringify({ ...config, expose: [...config.expose, `echo=127.0.0.1:${echo.port}@0`] }));
      const from = client.lines.length;
      client.child.kill('SIGHUP');
      expect(await client.waitFor('config reloaded')).toMatchObject({ changed: ['expose'] });
      const echoUp = await client.waitFor('tunnel up', (l) => l.tunnel === 'echo' && client.lines.indexOf(l) >= from);
      const socket = await h.connectTo(portOf(echoUp.remote));
      socket.end('across the reload');
      expect((await h.collectUntilEnd(socket)).toString()).toBe('across the reload');
      const again = await curl(`http://127.0.0.1:${portOf((await client.waitFor('tunnel up', (l) => l.tunnel === 'web' && client.lines.indexOf(l) >= from)).remote)}/`);
      expect(sha(again.stdout)).toBe(sha(body));
      open.write('\r\n');
      const response = await reply;
      expect(sha(response.subarray(response.indexOf('\r\n\r\n') + 4))).toBe(sha(body));

      expect(await client.stop()).toBe(0);
      expect(await server.stop()).toBe(0);
    }, 60_000);
  });
});

function writeToken(): string {
  const file = path.join(dir, 'token');
  fs.writeFileSync(file, `${TOKEN}\n`, { mode: 0o600 });
  return file;
}
