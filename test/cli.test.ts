// The `splicer forward` command, run as a user would: a child process, real curl.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runCli, startCli, portOf, type CliProcess, type LogLine } from './cli-harness.js';
import { needsSplice, needsTool } from './policy.js';

const listenPort = (started: LogLine) => portOf((started.listen as string[])[0]);

/** `splicer COMMAND --listen 127.0.0.1:0 ...args`, once it logged `ready`; its port. */
async function startCommand(args: string[], command = 'forward', ready = 'forwarding'): Promise<CliProcess & { port: number; started: LogLine }> {
  const run = startCli([command, '--listen', '127.0.0.1:0', ...args]);
  const started = await run.waitFor(ready);
  return { ...run, port: listenPort(started), started };
}

function curl(args: string[]): Promise<{ status: number; stdout: Buffer }> {
  return new Promise((resolve) => {
    const child = spawn('curl', ['-sS', '--max-time', '20', ...args]);
    const chunks: Buffer[] = [];
    child.stdout.on('data', (chunk) => chunks.push(chunk));
    child.on('close', (status) => resolve({ status: status ?? -1, stdout: Buffer.concat(chunks) }));
  });
}

describe('splicer forward (CLI)', () => {
  beforeEach((ctx) => needsTool(ctx, 'curl'));
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
    it(`carries an HTTP download for curl, engine ${engine}, and logs one line per connection`, async (ctx) => {
      if (engine === 'splice') needsSplice(ctx);
      const run = await startCommand(['--to', `127.0.0.1:${originPort}`, '--engine', engine]);
      expect(run.started.engine).toBe(engine);
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
      expect(await run.exited).toBe(0);
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
    const run = await startCommand(['--to', `127.0.0.1:${closedPort}`]);
    try {
      const { status } = await curl([`http://127.0.0.1:${run.port}/`]);
      // A reset either way: 56 "Recv failure: Connection reset by peer", or 7 when the reset comes so
      // early that curl is still checking its connect.
      expect([7, 56]).toContain(status);
      const closed = await run.waitFor('connection closed');
      expect(closed).toMatchObject({ reason: 'connect-failed', code: 'ECONNREFUSED' });
    } finally {
      run.child.kill('SIGTERM');
    }
  });

  it('names a bad flag value and exits non-zero', () => {
    const result = runCli(['forward', '--to', '::1:80']);
    expect(result.status).not.toBe(0);
    expect(result.stderr).toMatch(/\[::1\]:80/);
    const missing = runCli(['forward']);
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toMatch(/--to/);
  });
});

describe('splicer proxy (CLI)', () => {
  beforeEach((ctx) => needsTool(ctx, 'curl'));
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
    const run = await startCommand(['--auth', 'alice:s3cret', '--deny', `port=${originPort + 1}`, '--allow', 'to=127.0.0.0/8'], 'proxy', 'proxy listening');
    try {
      const ok = await curl(['--socks5-hostname', `alice:s3cret@127.0.0.1:${run.port}`, `http://localhost:${originPort}/`]);
      expect(ok.status).toBe(0);
      expect(ok.stdout.equals(body)).toBe(true);
      const wrong = await curl(['--socks5', `alice:nope@127.0.0.1:${run.port}`, `http://127.0.0.1:${originPort}/`]);
      expect(wrong.status).not.toBe(0);
      const http407 = await curl(['-o', '/dev/null', '-w', '%{http_code}', '--proxy', `http://127.0.0.1:${run.port}`, `http://127.0.0.1:${originPort}/`]);
      expect(http407.stdout.toString()).toBe('407');
      const outcomes: unknown[] = [];
      for (let i = 0; i < 3; i++) outcomes.push((await run.waitFor('connection closed')).outcome);
      expect(outcomes.sort()).toEqual(['auth-failed', 'auth-failed', 'eof']);
      expect(run.started.rules).toEqual([`deny port=${originPort + 1}`, 'allow to=127.0.0.0/8']);
    } finally {
      run.child.kill('SIGTERM');
    }
  });

  it('refuses to become an open proxy, and names a bad rule', () => {
    const open = runCli(['proxy', '--listen', '0.0.0.0:0']);
    expect(open.status).toBe(1);
    expect(open.stderr).toMatch(/open proxy/);
    expect(open.stderr).toMatch(/--open/);
    const badRule = runCli(['proxy', '--allow', 'port=99999']);
    expect(badRule.status).not.toBe(0);
    expect(badRule.stderr).toMatch(/99999/);
  });
});
