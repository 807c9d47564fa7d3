// `splicer proxy --listen mux://` and `mux+tls://` as a user runs them: chained behind
// `splicer forward --to mux://` (and the encrypted chain behind `--to mux+tls://`, pinned) with real curl (SOCKS5 with remote names, plain HTTP proxying,
// HTTP CONNECT), bodies hashed; TLS with a self-signed certificate and a SOCKS5 user; SIGHUP
// adding and removing a mux address; and the errors that name a wrong address or flag.
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import os from 'node:os';
import path from 'node:path';
import { stringify as toYaml } from 'yaml';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { freePort, portOf, runCli, startCli, type CliProcess } from './cli-harness.js';
import * as h from './helpers.js';
import { KiB } from './helpers.js';
import { runTool, startOrigin, type Origin } from './proxy-helpers.js';
import { hashStream, writePattern } from './mux-helpers.js';
import { muxClient, socks5Stream } from './proxy-mux-helpers.js';
import { hasTool } from './policy.js';
import * as t from './tunnel-helpers.js';

afterEach(h.closeAll);

let dir: string;
let origin: Origin;
beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splicer-proxy-mux-'));
  origin = await startOrigin(512 * KiB);
});
afterAll(async () => {
  fs.rmSync(dir, { recursive: true, force: true });
  await origin.close();
});

/** `splicer proxy ...args`, once listening: its mux:// (or mux+tls://) port. */
async function startMuxProxy(args: string[]): Promise<{ run: CliProcess; port: number; listen: string[]; started: Record<string, unknown> }> {
  const run = startCli(['proxy', ...args]);
  const started = await run.waitFor('proxy listening');
  const listen = started.listen as string[];
  return { run, port: portOf(listen.find((address) => address.startsWith('mux'))), listen, started };
}

/** `splicer proxy ...args` with a tls:// address, once listening: that address's port. */
async function startTlsProxy(args: string[]) {
  const run = startCli(['proxy', ...args]);
  const started = await run.waitFor('proxy listening');
  const listen = started.listen as string[];
  return { run, port: portOf(listen.find((address) => address.startsWith('tls://'))), listen, started };
}

/** Exactly `count` bytes off the stream. */
async function readBytes(stream: tls.TLSSocket, count: number): Promise<Buffer> {
  for (;;) {
    const chunk = stream.read(count) as Buffer | null;
    if (chunk) return chunk;
    await once(stream, 'readable');
  }
}

function curl(args: string[]) {
  return runTool('curl', ['-sS', '--max-time', '20', ...args], { timeoutMs: 30_000 });
}

describe('splicer proxy --listen mux://', () => {
  it.runIf(hasTool('curl'))('serves curl through `forward --to mux://`: SOCKS5 with remote names, plain HTTP and CONNECT, bodies hashed', async () => {
    const proxy = await startMuxProxy(['--listen', 'mux://127.0.0.1:0']);
    expect(proxy.listen).toEqual([`mux://127.0.0.1:${proxy.port}`]);
    const front = startCli(['forward', '--listen', '127.0.0.1:0', '--to', `mux://127.0.0.1:${proxy.port}`]);
    const frontPort = portOf(((await front.waitFor('forwarding')).listen as string[])[0]);
    const url = `http://127.0.0.1:${origin.port}/file`;
    const runs = [
      ['--socks5-hostname', `127.0.0.1:${frontPort}`, url],
      ['-x', `http://127.0.0.1:${frontPort}`, url],
      ['-p', '-x', `http://127.0.0.1:${frontPort}`, url],
    ];
    for (const args of runs) {
      const result = await curl(args);
      expect(result.stderr).toBe('');
      expect(h.sha256(result.stdout)).toBe(origin.sha);
    }
    const closed = [];
    for (let i = 0; i < runs.length; i++) closed.push(await proxy.run.waitFor('connection closed'));
    expect(closed.map((line) => line.protocol)).toEqual(['socks5', 'http', 'http']);
    // Every stream came over the one session: one client, the forwarder's connection.
    expect(new Set(closed.map((line) => line.client)).size).toBe(1);
    expect(closed.map((line) => line.muxStream)).toEqual([1, 3, 5]);
    expect(await front.stop()).toBe(0);
    expect(await proxy.run.stop()).toBe(0);
  });

  it('SIGHUP: a mux address added accepts sessions, a removed one refuses them', async () => {
    const echo = await h.startEchoServer();
    const [oldPort, newPort] = [await freePort(), await freePort()];
    const file = path.join(dir, 'mux.yaml');
    fs.writeFileSync(file, toYaml({ listen: [`mux://127.0.0.1:${oldPort}`], 'mux-max-streams': 8 }));
    const { run } = await startMuxProxy(['--config', file]);
    const before = await muxClient(oldPort);
    fs.writeFileSync(file, toYaml({ listen: [`mux://127.0.0.1:${newPort}`, '127.0.0.1:0'], 'mux-max-streams': 8 }));
    run.child.kill('SIGHUP');
    const outcome = await run.waitFor('config reloaded');
    expect((outcome.listen as string[]).filter((address) => address.startsWith('mux'))).toEqual([`mux://127.0.0.1:${newPort}`]);
    await expect(muxClient(oldPort)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    for (const client of [before, await muxClient(newPort)]) {
      const stream = await socks5Stream(client, echo.port);
      const received = hashStream(stream);
      const sent = await writePattern(stream, client.socket.localPort!, 64 * KiB);
      expect(await received).toEqual(sent);
    }
    expect(await run.stop()).toBe(0);
  });

  it('names what is wrong with an address or a flag', () => {
    const cases: Array<[string[], RegExp]> = [
      [['--listen', 'ftp://127.0.0.1:0'], /mux:\/\/ \(yamux\) and mux\+tls:\/\//],
      [['--listen', 'mux+tls://127.0.0.1:0'], /mux\+tls:\/\/ needs --tls-cert and --tls-key/],
      [['--listen', 'mux://127.0.0.1:0', '--tls-cert', '/nonexistent.pem'], /--tls-cert and --tls-key go together/],
      [['--listen', 'mux://127.0.0.1:0', '--workers', '2'], /--workers does not apply with a mux/],
      [['--listen', 'mux://0.0.0.0:0'], /refusing to start: listening on mux:\/\/0\.0\.0\.0:0 .*open proxy/],
      [['--listen', 'mux://127.0.0.1:0', '--mux-window', '1k'], /--mux-window must be from/],
      [['--listen', 'mux://127.0.0.1:0', '--accept-proxy-protocol'], /--accept-proxy-protocol does not apply with a mux/],
      [['--listen', 'mux+tls://127.0.0.1:0', '--tls-cert', '/nonexistent.pem', '--tls-key', '/nonexistent.pem'], /--tls-cert: cannot read \/nonexistent\.pem: ENOENT/],
    ];
    for (const [args, message] of cases) {
      const result = runCli(['proxy', ...args]);
      expect(result.status, args.join(' ')).not.toBe(0);
      expect(result.stderr, args.join(' ')).toMatch(message);
    }
  });
});

describe.runIf(t.hasOpenssl)('splicer proxy --listen mux+tls://', () => {
  let cert: t.TestCert;
  beforeAll(() => {
    cert = t.makeCert();
  });
  afterAll(() => fs.rmSync(cert.dir, { recursive: true, force: true }));

  it('serves SOCKS5 streams with a user over TLS, hashed; a wrong password is refused', async () => {
    const echo = await h.startEchoServer();
    const { run, port, listen } = await startMuxProxy(['--listen', 'mux+tls://127.0.0.1:0', '--tls-cert', cert.certFile, '--tls-key', cert.keyFile, '--auth', 'alice:s3cret']);
    expect(listen).toEqual([`mux+tls://127.0.0.1:${port}`]);
    const client = await muxClient(port, { ca: cert.cert });
    await expect(socks5Stream(client, echo.port, { user: 'alice', pass: 'wrong' })).rejects.toThrow(/Authentication failed/i);
    const stream = await socks5Stream(client, echo.port, { user: 'alice', pass: 's3cret' });
    const received = hashStream(stream);
    const sent = await writePattern(stream, 21, 256 * KiB);
    expect(await received).toEqual(sent);
    const served = await run.waitFor('connection closed', (line) => line.outcome === 'eof');
    expect(served).toMatchObject({ client: client.peer, user: 'alice', engine: 'js' });
    expect(await run.stop()).toBe(0);
  });

  it.runIf(hasTool('curl'))('tls:// is an HTTPS proxy: curl over TLS (CONNECT and plain HTTP) and SOCKS5 over TLS, hashed; a client that does not speak TLS is dropped', async () => {
    const { run, port, listen, started } = await startTlsProxy(['--listen', 'tls://127.0.0.1:0', '--listen', '127.0.0.1:0', '--tls-cert', cert.certFile, '--tls-key', cert.keyFile]);
    expect(listen).toEqual([expect.stringMatching(/^127\.0\.0\.1:\d+$/), `tls://127.0.0.1:${port}`]);
    expect(started.tlsFingerprint).toBe(cert.fingerprint);
    const url = `http://127.0.0.1:${origin.port}/file`;
    for (const args of [['-p', '-x', `https://127.0.0.1:${port}`], ['-x', `https://127.0.0.1:${port}`]]) {
      const result = await curl([...args, '--proxy-cacert', cert.certFile, url]);
      expect(result.stderr).toBe('');
      expect(h.sha256(result.stdout)).toBe(origin.sha);
    }
    // SOCKS5 over TLS, by hand: no auth, CONNECT to an echo server, 256 KiB echoed.
    const echo = await h.startEchoServer();
    const secure = tls.connect({ host: '127.0.0.1', port, ca: cert.cert, servername: 'tunnel.test' });
    await once(secure, 'secureConnect');
    secure.write(Buffer.from([5, 1, 0]));
    expect([...(await readBytes(secure, 2))]).toEqual([5, 0]);
    secure.write(Buffer.from([5, 1, 0, 1, 127, 0, 0, 1, echo.port >> 8, echo.port & 0xff]));
    expect([...(await readBytes(secure, 10))].slice(0, 2)).toEqual([5, 0]);
    const received = hashStream(secure);
    const sent = await writePattern(secure, 7, 256 * KiB);
    expect(await received).toEqual(sent);
    // Plain SOCKS5 on a tls:// address: the handshake fails, the connection is closed.
    const plain = net.connect(port, '127.0.0.1');
    plain.on('error', () => {});
    plain.write(Buffer.from([5, 1, 0]));
    await once(plain, 'close');
    const records = [];
    for (let i = 0; i < 3; i++) records.push(await run.waitFor('connection closed'));
    expect(records.map((line) => line.engine)).toEqual(['js', 'js', 'js']);
    expect(records.every((line) => line.muxStream === undefined)).toBe(true);
    expect(await run.stop()).toBe(0);
  });

  it.runIf(hasTool('curl'))('is the encrypted chain behind `forward --to mux+tls:// --tls-fingerprint`: curl with a SOCKS5 user, hashed; a wrong pin reaches nothing', async () => {
    const { run, port, started } = await startMuxProxy(['--listen', 'mux+tls://127.0.0.1:0', '--tls-cert', cert.certFile, '--tls-key', cert.keyFile, '--auth', 'alice:s3cret']);
    // The fingerprint to pin is the one the exit logs.
    expect(started.tlsFingerprint).toBe(cert.fingerprint);
    const front = startCli(['forward', '--listen', '127.0.0.1:0', '--to', `mux+tls://127.0.0.1:${port}`, '--tls-fingerprint', started.tlsFingerprint as string]);
    const frontPort = portOf(((await front.waitFor('forwarding')).listen as string[])[0]);
    const url = `http://127.0.0.1:${origin.port}/file`;
    for (const proxyUrl of [`socks5h://alice:s3cret@127.0.0.1:${frontPort}`, `http://alice:s3cret@127.0.0.1:${frontPort}`]) {
      const result = await curl(['-x', proxyUrl, url]);
      expect(result.stderr).toBe('');
      expect(h.sha256(result.stdout)).toBe(origin.sha);
    }
    const refused = await curl(['-x', `socks5h://alice:wrong@127.0.0.1:${frontPort}`, url]);
    expect(refused.stdout.length).toBe(0);
    expect(refused.stderr).toMatch(/User was rejected by the SOCKS5 server/);
    expect(await front.stop()).toBe(0);

    // The same front pinned to another certificate: the session is never made, the client is reset.
    const other = t.makeCert('other.test');
    try {
      const pinnedWrong = startCli(['forward', '--listen', '127.0.0.1:0', '--to', `mux+tls://127.0.0.1:${port}`, '--tls-fingerprint', other.fingerprint, '--connect-timeout', '1']);
      const wrongPort = portOf(((await pinnedWrong.waitFor('forwarding')).listen as string[])[0]);
      const result = await curl(['-x', `socks5h://alice:s3cret@127.0.0.1:${wrongPort}`, url]);
      expect(result.stdout.length).toBe(0);
      expect(result.stderr).not.toBe('');
      expect(await pinnedWrong.stop()).toBe(0);
    } finally {
      fs.rmSync(other.dir, { recursive: true, force: true });
    }
    expect(await run.stop()).toBe(0);
  });
});
