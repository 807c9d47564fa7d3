// `splicer forward` with TLS ends as a user runs it, with a throwaway self-signed certificate:
// n:1 over mux+tls:// to a 1:n mux+tls:// end, pinned by fingerprint; a wrong pin, a CA file and
// a wrong name; tls:// on the listen side with Node's TLS client and curl, on the upstream side
// to a Node TLS server; yamux-js as a client over TLS; every byte hashed end to end.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import * as h from './helpers.js';
import { MiB } from './helpers.js';
import { portOf, startCli, type CliProcess } from './cli-harness.js';
import { hasOpenssl, makeCert, type TestCert } from './tunnel-helpers.js';
import { writePattern } from './mux-helpers.js';
import { attachYamuxJs, YAMUX_JS_CONFIG, yamuxJs } from './yamux-js.js';
import { spliceSkipReason } from './policy.js';

afterEach(h.closeAll);

const curlMissing = spawnSync('curl', ['--version']).status === 0 ? undefined : 'curl is not installed';

async function started(args: string[]): Promise<{ cli: CliProcess; port: number; line: Record<string, unknown> }> {
  const cli = startCli(['forward', ...args]);
  const line = await cli.waitFor('forwarding');
  return { cli, port: portOf((line.listen as string[])[0]), line };
}

/** A TLS client of 127.0.0.1:port verifying `ca` for `servername`. */
function tlsClient(port: number, ca: Buffer, servername: string): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = h.track(tls.connect({ host: h.HOST, port, ca, servername, allowHalfOpen: true } as tls.ConnectionOptions));
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** A client sends `bytes` and half-closes; the echo it reads back must hash the same. */
async function echoedIntact(socket: import('node:net').Socket, seed: number, bytes: number): Promise<void> {
  const received = h.hashUntilEnd(socket);
  const sent = await h.writeRandom(socket, seed, bytes);
  expect(await received).toEqual(sent);
}

describe.runIf(hasOpenssl)('splicer forward with TLS', () => {
  let cert: TestCert;
  beforeAll(() => {
    cert = makeCert('forward.test');
  });
  afterAll(() => fs.rmSync(cert.dir, { recursive: true, force: true }));

  const tlsListen = (extra: string[] = []) => ['--tls-cert', cert.certFile, '--tls-key', cert.keyFile, ...extra];

  it('carries 30 clients over --to mux+tls:// (pinned) to a --listen mux+tls:// end, every byte hashed, on the JS engine', async () => {
    const target = await h.startEchoServer();
    const far = await started(['--listen', 'mux+tls://127.0.0.1:0', '--to', `127.0.0.1:${target.port}`, ...tlsListen()]);
    // The far end logs its certificate's fingerprint, for the near end to pin.
    expect(far.line.tls).toEqual({ fingerprint: cert.fingerprint });
    expect(far.line.engine).toBe('js');
    expect((far.line.listen as string[])[0]).toMatch(/^mux\+tls:\/\/127\.0\.0\.1:\d+$/);
    const near = await started(['--listen', '127.0.0.1:0', '--to', `mux+tls://127.0.0.1:${far.port}`, '--tls-fingerprint', cert.fingerprint.replace(/:/g, '').toLowerCase()]);
    expect(near.line).toMatchObject({ to: `mux+tls://127.0.0.1:${far.port}`, engine: 'js', muxSessions: 1 });
    await h.within(
      Promise.all(Array.from({ length: 30 }, async (_, i) => echoedIntact(await h.connectTo(near.port), 500 + i, MiB + i * 1000))),
      60_000,
      'clients through mux+tls',
    );
    expect(target.conns.items).toHaveLength(30);
    // Each pair's record, once it has ended on the near side too.
    const closed = [];
    for (let i = 0; i < 30; i++) closed.push(await near.cli.waitFor('connection closed'));
    expect(new Set(closed.map((l) => `${l.engine}/${l.reason}`))).toEqual(new Set(['js/eof']));
    expect(await near.cli.stop()).toBe(0);
    expect(await far.cli.stop()).toBe(0);
  });

  it('refuses a far end whose certificate is not the pinned one: clients are reset, the log says why, nothing reaches the target', async () => {
    const target = await h.startEchoServer();
    const far = await started(['--listen', 'mux+tls://127.0.0.1:0', '--to', `127.0.0.1:${target.port}`, ...tlsListen()]);
    const wrong = 'AB:'.repeat(31) + 'AB';
    const near = await started(['--listen', '127.0.0.1:0', '--to', `mux+tls://127.0.0.1:${far.port}`, '--tls-fingerprint', wrong, '--connect-timeout', '1']);
    const refused = await near.cli.waitFor('mux session dial failed');
    expect(refused.code).toBe('ERR_TLS_FINGERPRINT');
    expect(String(refused.err)).toContain(cert.fingerprint);
    const client = await h.connectTo(near.port);
    const seen = h.watch(client);
    client.write('hello');
    expect(h.sawReset(await h.within(seen.closed, 10_000, 'the client reset'))).toBe(true);
    expect(target.conns.items).toHaveLength(0);
  });

  it('verifies a tls:// upstream against --tls-ca and --tls-servername, and resets clients when the name or the CA is wrong', async () => {
    const target = await h.startEchoServer();
    const far = await started(['--listen', 'tls://127.0.0.1:0', '--to', `127.0.0.1:${target.port}`, ...tlsListen()]);
    expect(far.line.tls).toEqual({ fingerprint: cert.fingerprint });
    const near = await started(['--listen', '127.0.0.1:0', '--to', `tls://127.0.0.1:${far.port}`, '--tls-ca', cert.certFile, '--tls-servername', 'forward.test']);
    await echoedIntact(await h.connectTo(near.port), 7, 2 * MiB);
    expect(target.conns.items).toHaveLength(1);

    for (const [flags, code] of [
      [['--tls-ca', cert.certFile, '--tls-servername', 'other.test'], 'ERR_TLS_CERT_ALTNAME_INVALID'],
      [['--tls'], 'DEPTH_ZERO_SELF_SIGNED_CERT'],
    ] as const) {
      const bad = await started(['--listen', '127.0.0.1:0', '--to', `tls://127.0.0.1:${far.port}`, ...flags]);
      const client = await h.connectTo(bad.port);
      const seen = h.watch(client);
      client.write('hello');
      expect(h.sawReset(await h.within(seen.closed, 10_000, 'the client reset'))).toBe(true);
      expect((await bad.cli.waitFor('no upstream: client reset')).code).toBe(code);
    }
    expect(target.conns.items).toHaveLength(1);
  });

  it('terminates TLS on --listen tls://: a Node TLS client, half-close kept, bytes hashed', async () => {
    const target = await h.startServer((socket) => {
      // Reads to the client's FIN, then answers with what it counted: the FIN crossed the hop.
      void h.hashUntilEnd(socket).then((r) => socket.end(`${r.bytes} ${r.sha}`));
    });
    const far = await started(['--listen', 'tls://127.0.0.1:0', '--to', `127.0.0.1:${target.port}`, ...tlsListen()]);
    const client = await tlsClient(far.port, cert.cert, 'forward.test');
    const answer = h.collectUntilEnd(client);
    const sent = await h.writeRandom(client, 3, 3 * MiB);
    expect((await h.within(answer, 20_000, 'the answer')).toString()).toBe(`${sent.bytes} ${sent.sha}`);
  });

  it('resets a --listen tls:// client when its target resets (with the addon; a close without it)', async () => {
    const target = await h.startServer((socket) => {
      // The first bytes arrive, then the target resets the connection.
      socket.once('data', () => socket.resetAndDestroy());
    });
    const far = await started(['--listen', 'tls://127.0.0.1:0', '--to', `127.0.0.1:${target.port}`, ...tlsListen()]);
    const client = await tlsClient(far.port, cert.cert, 'forward.test');
    const seen = h.watch(client);
    client.write('hello');
    const observed = await h.within(seen.finished, 10_000, 'the client closed or ended');
    if (spliceSkipReason) expect(observed.ended || observed.errorCode !== undefined).toBe(true);
    else expect(h.sawReset(observed), JSON.stringify(observed)).toBe(true);
  });

  it.skipIf(curlMissing)(`serves curl over --listen tls:// to a plain HTTP server${curlMissing ? `: skipped, ${curlMissing}` : ''}`, async () => {
    const body = h.patternBytes(11, 512 * 1024);
    const web = http.createServer((_, res) => res.end(body));
    const webPort = await h.listen(web);
    const far = await started(['--listen', 'tls://127.0.0.1:0', '--to', `127.0.0.1:${webPort}`, ...tlsListen()]);
    // Not spawnSync: the web server answers from this process's event loop.
    const curl = spawn('curl', ['-sS', '--max-time', '20', '--cacert', cert.certFile, '--resolve', `forward.test:${far.port}:127.0.0.1`, `https://forward.test:${far.port}/`]);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    curl.stdout.on('data', (d: Buffer) => out.push(d));
    curl.stderr.on('data', (d: Buffer) => err.push(d));
    const code = await h.within(new Promise((resolve) => curl.once('close', resolve)), 30_000, 'curl');
    expect(Buffer.concat(err).toString()).toBe('');
    expect(code).toBe(0);
    expect(h.sha256(Buffer.concat(out))).toBe(h.sha256(body));
  });

  it('originates TLS with --to tls:// to a Node TLS server, pinned, bytes hashed both ways', async () => {
    const server = tls.createServer({ cert: cert.cert, key: cert.key, allowHalfOpen: true } as tls.TlsOptions, (socket) => {
      socket.on('error', () => {});
      socket.pipe(socket);
    });
    const serverPort = await h.listen(server);
    const near = await started(['--listen', '127.0.0.1:0', '--to', `tls://127.0.0.1:${serverPort}`, '--tls-fingerprint', cert.fingerprint]);
    expect(near.line.engine).toBe('js');
    await h.within(
      Promise.all(Array.from({ length: 10 }, async (_, i) => echoedIntact(await h.connectTo(near.port), 90 + i, MiB))),
      30_000,
      'clients to a TLS server',
    );
  });

  it("takes yamux-js's streams over TLS on --listen mux+tls://, each echoed by the target and hashed", async () => {
    const target = await h.startEchoServer();
    const far = await started(['--listen', 'mux+tls://127.0.0.1:0', '--to', `127.0.0.1:${target.port}`, ...tlsListen()]);
    const theirs = new yamuxJs.Client(YAMUX_JS_CONFIG);
    attachYamuxJs(await tlsClient(far.port, cert.cert, 'forward.test'), theirs);
    const bytes = 256 * 1024;
    await h.within(
      Promise.all(
        Array.from({ length: 10 }, async (_, i) => {
          const stream = theirs.open();
          // yamux-js does not pass on the FIN it gets: read back exactly what was sent.
          const echoed = new Promise<string>((resolve) => {
            const hash = createHash('sha256');
            let got = 0;
            stream.on('data', (d: Buffer) => {
              hash.update(d);
              got += d.length;
              if (got >= bytes) resolve(got === bytes ? hash.digest('hex') : `overrun: ${got}`);
            });
          });
          const sent = await writePattern(stream, 70 + i, bytes, { end: false });
          expect(await echoed).toBe(sent.sha);
          stream.close();
        }),
      ),
      30_000,
      'yamux-js streams over TLS',
    );
    expect(target.conns.items).toHaveLength(10);
  });

  it('carries tls:// on both ends: TLS in, TLS out', async () => {
    const target = await h.startEchoServer();
    const far = await started(['--listen', 'tls://127.0.0.1:0', '--to', `127.0.0.1:${target.port}`, ...tlsListen()]);
    const middle = await started(['--listen', 'tls://127.0.0.1:0', '--to', `tls://127.0.0.1:${far.port}`, '--tls-fingerprint', cert.fingerprint, ...tlsListen()]);
    await echoedIntact(await tlsClient(middle.port, cert.cert, 'forward.test'), 5, 2 * MiB);
  });
});
