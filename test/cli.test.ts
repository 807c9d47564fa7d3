// The `splicer forward` command, run as a user would: a child process, real curl.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const cli = path.join(import.meta.dirname, '..', 'dist', 'cli.js');
const hasCurl = spawnSync('curl', ['--version']).status === 0;

interface Running {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  port: number;
  waitFor(msg: string): Promise<Record<string, unknown>>;
}

async function startCli(args: string[], command = 'forward', ready = 'forwarding'): Promise<Running> {
  const child = spawn(process.execPath, [cli, command, '--listen', '127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: Record<string, unknown>[] = [];
  const waiters: Array<() => void> = [];
  readline.createInterface({ input: child.stdout! }).on('line', (line) => {
    lines.push(JSON.parse(line));
    waiters.splice(0).forEach((wake) => wake());
  });
  const waitFor = async (msg: string) => {
    for (;;) {
      const found = lines.find((line) => line.msg === msg);
      if (found) return found;
      if (child.exitCode !== null) throw new Error(`splicer exited (${child.exitCode}) before "${msg}"`);
      await new Promise<void>((resolve) => waiters.push(resolve));
    }
  };
  const started = await waitFor(ready);
  const port = Number(String((started.listen as string[])[0]).split(':').pop());
  return { child, lines, port, waitFor };
}

function curl(args: string[]): Promise<{ status: number; stdout: Buffer }> {
  return new Promise((resolve) => {
    const child = spawn('curl', ['-sS', '--max-time', '20', ...args]);
    const chunks: Buffer[] = [];
    child.stdout.on('data', (chunk) => chunks.push(chunk));
    child.on('close', (status) => resolve({ status: status ?? -1, stdout: Buffer.concat(chunks) }));
  });
}

describe.skipIf(!hasCurl)('splicer forward (CLI)', () => {
  const body = crypto.randomBytes(8 << 20);
  const bodyHash = crypto.createHash('sha256').update(body).digest('hex');
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

  for (const engine of ['splice', 'js']) {
    it(`carries an HTTP download for curl, engine ${engine}, and logs one line per connection`, async () => {
      const run = await startCli(['--to', `127.0.0.1:${originPort}`, '--engine', engine]);
      try {
        const { status, stdout } = await curl([`http://127.0.0.1:${run.port}/file`]);
        expect(status).toBe(0);
        expect(crypto.createHash('sha256').update(stdout).digest('hex')).toBe(bodyHash);
        const closed = await run.waitFor('connection closed');
        expect(closed).toMatchObject({ engine, reason: 'eof', upstream: `127.0.0.1:${originPort}` });
        expect(closed.bytesDown).toBeGreaterThan(body.length);
      } finally {
        run.child.kill('SIGTERM');
      }
      const code = await new Promise<number | null>((resolve) => run.child.once('exit', (exitCode) => resolve(exitCode)));
      expect(code).toBe(0);
      expect(run.lines.some((line) => line.msg === 'stopped')).toBe(true);
    });
  }

  it('resets the client when the upstream refuses, and says so', async () => {
    const closedPort = await new Promise<number>((resolve) => {
      const probe = net.createServer().listen(0, '127.0.0.1', () => {
        const { port } = probe.address() as net.AddressInfo;
        probe.close(() => resolve(port));
      });
    });
    const run = await startCli(['--to', `127.0.0.1:${closedPort}`]);
    try {
      const { status } = await curl([`http://127.0.0.1:${run.port}/`]);
      expect(status).toBe(56);  // curl: "Recv failure: Connection reset by peer"
      const closed = await run.waitFor('connection closed');
      expect(closed).toMatchObject({ reason: 'connect-failed', code: 'ECONNREFUSED' });
    } finally {
      run.child.kill('SIGTERM');
    }
  });

  it('names a bad flag value and exits non-zero', () => {
    const result = spawnSync(process.execPath, [cli, 'forward', '--to', '::1:80'], { encoding: 'utf8' });
    expect(result.status).not.toBe(0);
    expect(result.stderr).toMatch(/\[::1\]:80/);
    const missing = spawnSync(process.execPath, [cli, 'forward'], { encoding: 'utf8' });
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toMatch(/--to/);
  });
});

describe.skipIf(!hasCurl)('splicer proxy (CLI)', () => {
  let origin: http.Server;
  let originPort: number;
  const body = crypto.randomBytes(1 << 20);

  beforeAll(async () => {
    origin = http.createServer((req, res) => res.end(body));
    await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
    originPort = (origin.address() as net.AddressInfo).port;
  });
  afterAll(() => new Promise<void>((resolve) => origin.close(() => resolve())));

  it('serves SOCKS5 with a user, refuses a wrong password, applies rules in order, logs each connection', async () => {
    const run = await startCli(['--auth', 'alice:s3cret', '--deny', `port=${originPort + 1}`, '--allow', 'to=127.0.0.0/8'], 'proxy', 'proxy listening');
    try {
      const ok = await curl(['--socks5-hostname', `alice:s3cret@127.0.0.1:${run.port}`, `http://localhost:${originPort}/`]);
      expect(ok.status).toBe(0);
      expect(ok.stdout.equals(body)).toBe(true);
      const wrong = await curl(['--socks5', `alice:nope@127.0.0.1:${run.port}`, `http://127.0.0.1:${originPort}/`]);
      expect(wrong.status).not.toBe(0);
      const http407 = await curl(['-o', '/dev/null', '-w', '%{http_code}', '--proxy', `http://127.0.0.1:${run.port}`, `http://127.0.0.1:${originPort}/`]);
      expect(http407.stdout.toString()).toBe('407');
      const outcomes = () => run.lines.filter((line) => line.msg === 'connection closed').map((line) => line.outcome);
      for (let i = 0; i < 50 && outcomes().length < 3; i++) await new Promise((r) => setTimeout(r, 100));
      expect(outcomes().sort()).toEqual(['auth-failed', 'auth-failed', 'eof']);
      const started = run.lines.find((line) => line.msg === 'proxy listening')!;
      expect(started.rules).toEqual([`deny port=${originPort + 1}`, 'allow to=127.0.0.0/8']);
    } finally {
      run.child.kill('SIGTERM');
    }
  });

  it('refuses to become an open proxy, and names a bad rule', () => {
    const open = spawnSync(process.execPath, [cli, 'proxy', '--listen', '0.0.0.0:0'], { encoding: 'utf8' });
    expect(open.status).toBe(1);
    expect(open.stderr).toMatch(/open proxy/);
    expect(open.stderr).toMatch(/--open/);
    const badRule = spawnSync(process.execPath, [cli, 'proxy', '--allow', 'port=99999'], { encoding: 'utf8' });
    expect(badRule.status).not.toBe(0);
    expect(badRule.stderr).toMatch(/99999/);
  });
});
