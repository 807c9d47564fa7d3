// `splicer tunnel server` and `splicer tunnel client` run as a user would: child processes, real curl,
// killed and restarted.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

const cli = path.join(import.meta.dirname, '..', 'dist', 'cli.js');
const hasCurl = spawnSync('curl', ['--version']).status === 0;
const TOKEN = 'cli-test-token-0123456789abcdef';

interface Running {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  stderr: string[];
  waitFor(msg: string, pred?: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Resolves once stderr has a line containing `text` (stderr and stdout are separate pipes: no order between them). */
  waitForStderr(text: string, timeoutMs?: number): Promise<string>;
  exited: Promise<number | null>;
}

const running = new Set<ChildProcess>();

function run(args: string[], env: Record<string, string> = {}): Running {
  const child = spawn(process.execPath, [cli, 'tunnel', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  running.add(child);
  const lines: Record<string, unknown>[] = [];
  const stderr: string[] = [];
  const waiters: Array<() => void> = [];
  const wake = () => waiters.splice(0).forEach((w) => w());
  readline.createInterface({ input: child.stdout! }).on('line', (line) => {
    lines.push(JSON.parse(line));
    wake();
  });
  readline.createInterface({ input: child.stderr! }).on('line', (line) => {
    stderr.push(line);
    wake();
  });
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      running.delete(child);
      wake();
      resolve(code);
    }),
  );
  const seen = new Set<Record<string, unknown>>();
  const waitFor = async (msg: string, pred: (line: Record<string, unknown>) => boolean = () => true, timeoutMs = 15_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // Each call returns a line not returned before, so a second 'tunnel up' waits for a new one.
      const found = lines.find((line) => line.msg === msg && !seen.has(line) && pred(line));
      if (found) {
        seen.add(found);
        return found;
      }
      if (child.exitCode !== null) throw new Error(`splicer exited (${child.exitCode}) before "${msg}": ${stderr.join('\n')}`);
      if (Date.now() > deadline) throw new Error(`no "${msg}" within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 200);
      });
    }
  };
  const waitForStderr = async (text: string, timeoutMs = 15_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = stderr.find((line) => line.includes(text));
      if (found) return found;
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`no "${text}" on stderr: ${stderr.join('\n')}`);
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 200);
      });
    }
  };
  return { child, lines, stderr, waitFor, waitForStderr, exited };
}

function curl(url: string): Promise<{ status: number; stdout: Buffer }> {
  return new Promise((resolve) => {
    const child = spawn('curl', ['-sS', '--max-time', '10', url]);
    const chunks: Buffer[] = [];
    child.stdout.on('data', (chunk) => chunks.push(chunk));
    child.on('close', (status) => resolve({ status: status ?? -1, stdout: Buffer.concat(chunks) }));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

const portOf = (address: unknown) => Number(String(address).split(':').pop());
const sha = (data: Buffer) => crypto.createHash('sha256').update(data).digest('hex');

afterEach(() => {
  for (const child of running) child.kill('SIGKILL');
});

describe('splicer tunnel (CLI)', () => {
  let dir: string;
  let tokenFile: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splicer-tunnel-cli-'));
    tokenFile = path.join(dir, 'token');
    fs.writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('refuses to start without a token, and names the ways to give one', () => {
    const env = { ...process.env };
    delete env.SPLICER_TUNNEL_TOKEN;
    const server = spawnSync(process.execPath, [cli, 'tunnel', 'server', '--listen', '127.0.0.1:0'], { encoding: 'utf8', env });
    expect(server.status).toBe(1);
    expect(server.stderr).toMatch(/refusing to start without a token/);
    expect(server.stderr).toMatch(/--token-file/);
    expect(server.stderr).toMatch(/SPLICER_TUNNEL_TOKEN/);
    const client = spawnSync(process.execPath, [cli, 'tunnel', 'client', '--server', '127.0.0.1:1', '--expose', 'web=127.0.0.1:80'], { encoding: 'utf8', env });
    expect(client.status).toBe(1);
    expect(client.stderr).toMatch(/without a token/);
    const badExpose = spawnSync(process.execPath, [cli, 'tunnel', 'client', '--server', '127.0.0.1:1', '--expose', 'web/x=127.0.0.1:80'], { encoding: 'utf8', env });
    expect(badExpose.status).not.toBe(0);
    expect(badExpose.stderr).toMatch(/"web\/x"/);
    const badPorts = spawnSync(process.execPath, [cli, 'tunnel', 'server', '--listen', '127.0.0.1:0', '--ports', '20100-20000'], { encoding: 'utf8', env });
    expect(badPorts.status).not.toBe(0);
    expect(badPorts.stderr).toMatch(/20100-20000/);
  });

  it('documents every flag in --help', () => {
    const flags = {
      server: ['--listen', '--token', '--token-file', '--ports', '--public-host', '--tls-cert', '--tls-key', '--heartbeat', '--heartbeat-timeout', '--data-timeout', '--handshake-timeout', '--max-pool', '--idle-timeout', '--engine', '--threads', '--grace', '--log-level'],
      client: ['--server', '--token', '--token-file', '--expose', '--client-id', '--pool', '--tls', '--tls-ca', '--tls-fingerprint', '--tls-servername', '--connect-timeout', '--backoff-max', '--idle-timeout', '--engine', '--threads', '--grace', '--log-level'],
    };
    for (const [command, expected] of Object.entries(flags)) {
      const help = spawnSync(process.execPath, [cli, 'tunnel', command, '--help'], { encoding: 'utf8' }).stdout;
      const documented = [...help.matchAll(/^\s+(--[a-z-]+)/gm)].map((m) => m[1]).filter((f) => f !== '--help');
      expect(documented.sort(), command).toEqual([...expected].sort());
    }
  });

  describe.skipIf(!hasCurl)('a two-process tunnel', () => {
    const body = crypto.randomBytes(4 << 20);
    let origin: http.Server;
    let originPort: number;
    beforeAll(async () => {
      origin = http.createServer((req, res) => {
        res.setHeader('content-length', body.length);
        res.end(body);
      });
      await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
      originPort = (origin.address() as net.AddressInfo).port;
    });
    afterAll(() => new Promise<void>((resolve) => origin.close(() => resolve())));

    it('publishes a service for curl, survives a client kill -9 and a server restart, and stops cleanly', async () => {
      const listenPort = await freePort();
      const serverArgs = ['server', '--listen', `127.0.0.1:${listenPort}`, '--heartbeat', '0.2', '--heartbeat-timeout', '1', '--grace', '0'];
      const env = { SPLICER_TUNNEL_TOKEN: TOKEN };
      let server = run(serverArgs, env);
      const started = await server.waitFor('tunnel server listening');
      expect(portOf(started.listen)).toBe(listenPort);
      expect(started).toMatchObject({ publicHost: '127.0.0.1', tls: false });

      const clientArgs = ['client', '--server', `127.0.0.1:${listenPort}`, '--token-file', tokenFile, '--expose', `web=127.0.0.1:${originPort}@0`, '--backoff-max', '0.3', '--grace', '0'];
      let client = run(clientArgs);
      const up = await client.waitFor('tunnel up');
      const port = portOf(up.remote);
      expect(up).toMatchObject({ tunnel: 'web', local: `127.0.0.1:${originPort}` });
      await client.waitForStderr(`splicer tunnel: web 127.0.0.1:${port} -> 127.0.0.1:${originPort}`);

      const first = await curl(`http://127.0.0.1:${port}/`);
      expect(first.status).toBe(0);
      expect(sha(first.stdout)).toBe(sha(body));
      const record = await server.waitFor('connection closed');
      expect(record).toMatchObject({ tunnel: 'web', reason: 'eof', engine: process.platform === 'linux' ? 'splice' : 'js' });
      expect(record.bytesDown).toBeGreaterThan(body.length);
      const clientRecord = await client.waitFor('connection closed');
      expect(clientRecord).toMatchObject({ tunnel: 'web', reason: 'eof', bytesDown: record.bytesDown });

      // kill -9 the client: its sessions's sockets close with it; a new one (same flags, same derived id) gets the port back.
      client.child.kill('SIGKILL');
      await client.exited;
      await server.waitFor('tunnel down');
      client = run(clientArgs);
      expect(portOf((await client.waitFor('tunnel up')).remote)).toBe(port);
      expect((await curl(`http://127.0.0.1:${port}/`)).status).toBe(0);

      // Restart the server: the client reconnects by itself and registers again.
      server.child.kill('SIGTERM');
      expect(await server.exited).toBe(0);
      await client.waitFor('disconnected');
      server = run(serverArgs, env);
      const again = portOf((await client.waitFor('tunnel up')).remote);
      const third = await curl(`http://127.0.0.1:${again}/`);
      expect(third.status).toBe(0);
      expect(sha(third.stdout)).toBe(sha(body));

      client.child.kill('SIGTERM');
      expect(await client.exited).toBe(0);
      expect(client.lines.some((line) => line.msg === 'stopped')).toBe(true);
      server.child.kill('SIGTERM');
      expect(await server.exited).toBe(0);
    }, 60_000);
  });
});
