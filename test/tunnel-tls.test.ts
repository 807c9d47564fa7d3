// The tunnel over TLS: a throwaway self-signed certificate, pinned by its SHA-256 fingerprint or
// trusted as a CA; the JS engine carries the data.
import fs from 'node:fs';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import * as h from './helpers.js';
import { KiB } from './helpers.js';
import * as t from './tunnel-helpers.js';

afterEach(async () => {
  await t.closeTunnels();
  await h.closeAll();
});

describe.runIf(t.hasOpenssl)('tunnel over TLS', () => {
  let cert: t.TestCert;
  beforeAll(() => {
    cert = t.makeCert();
  });
  afterAll(() => fs.rmSync(cert.dir, { recursive: true, force: true }));

  it('carries streams intact with a pinned self-signed certificate, on the JS engine, half-close kept', async () => {
    const service = await h.startHashServer({ replyBytes: (i) => 100 * KiB + i, when: 'end' });
    const { server, address, records } = await t.startServer({ tls: { cert: cert.cert, key: cert.key } });
    expect(server.fingerprint).toBe(cert.fingerprint);
    const { client, records: clientRecords } = t.startClient(address, { service: [service.port], tls: { fingerprint: cert.fingerprint }, pool: 2 });
    const port = await t.publicPort(client);
    const results = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const socket = await h.connectTo(port);
        const got = h.hashUntilEnd(socket);
        const sent = await h.writeRandom(socket, 40 + i, 64 * KiB + i * 1000);
        return { sent, got: await got };
      }),
    );
    const seen = await Promise.all(results.map((_, i) => service.records.nth(i).then(async (r) => `${(await r.received).sha}/${(await r.sent).sha}`)));
    for (const r of results) expect(seen).toContain(`${r.sent.sha}/${r.got.sha}`);
    await records.nth(19);
    await clientRecords.nth(19);
    expect(new Set(records.items.map((r) => `${r.engine}/${r.reason}`))).toEqual(new Set(['js/eof']));
    expect(new Set(clientRecords.items.map((r) => `${r.engine}/${r.reason}`))).toEqual(new Set(['js/eof']));
  });

  it('accepts colons or none, upper or lower case, in the fingerprint', async () => {
    const { address } = await t.startServer({ tls: { cert: cert.cert, key: cert.key } });
    const echo = await h.startEchoServer();
    const { client } = t.startClient(address, { service: [echo.port], tls: { fingerprint: cert.fingerprint.replace(/:/g, '').toLowerCase() } });
    const socket = await h.connectTo(await t.publicPort(client));
    socket.end('pinned');
    expect((await h.collectUntilEnd(socket)).toString()).toBe('pinned');
  });

  it('refuses a server whose certificate is not the pinned one, before saying anything', async () => {
    const { server, address } = await t.startServer({ tls: { cert: cert.cert, key: cert.key } });
    const sessions: unknown[] = [];
    server.on('sessionOpen', (s) => sessions.push(s));
    const wrong = 'AB:'.repeat(31) + 'AB';
    const { client } = t.startClient(address, { service: [1], tls: { fingerprint: wrong } });
    const failure = await new Promise<{ code: string; message: string }>((resolve) => client.once('connectFailed', resolve));
    expect(failure.code).toBe('ERR_TLS_FINGERPRINT');
    expect(failure.message).toContain(cert.fingerprint);
    expect(sessions).toEqual([]);
  });

  it('verifies against a CA file and the server name, and refuses a plain client', async () => {
    const { address, server } = await t.startServer({ tls: { cert: cert.cert, key: cert.key } });
    const echo = await h.startEchoServer();
    const { client } = t.startClient(address, { service: [echo.port], tls: { ca: cert.cert, servername: 'tunnel.test' } });
    const socket = await h.connectTo(await t.publicPort(client));
    socket.end('verified');
    expect((await h.collectUntilEnd(socket)).toString()).toBe('verified');

    const bad = t.startClient(address, { clientId: 'wrong-name', service: [echo.port], tls: { ca: cert.cert, servername: 'other.test' } });
    const failure = await new Promise<{ code: string }>((resolve) => bad.client.once('connectFailed', resolve));
    expect(failure.code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');

    // A client speaking plain TCP to a TLS server gets nowhere, and the server says why.
    const rejected = new Promise<{ code: string }>((resolve) => server.once('rejected', resolve));
    const plain = t.startClient(address, { clientId: 'plain', service: [echo.port], handshakeTimeout: 500, connectTimeout: 500 });
    await new Promise((resolve) => plain.client.once('connectFailed', resolve));
    expect((await rejected).code).toMatch(/ERR_SSL|ECONNRESET|ERR_TLS/);
  });

  it('resumes TLS sessions for data connections, still pinned', async () => {
    const { address } = await t.startServer({ tls: { cert: cert.cert, key: cert.key } });
    const echo = await h.startEchoServer();
    const { client } = t.startClient(address, { service: [echo.port], tls: { fingerprint: cert.fingerprint } });
    const port = await t.publicPort(client);
    const resumed: boolean[] = [];
    const original = tls.connect;
    // Observe the data connections' sockets as the dialer makes them.
    (tls as { connect: typeof tls.connect }).connect = ((...args: Parameters<typeof tls.connect>) => {
      const socket = original(...args);
      socket.once('secureConnect', () => resumed.push(socket.isSessionReused()));
      return socket;
    }) as typeof tls.connect;
    try {
      for (let i = 0; i < 3; i++) {
        const socket = await h.connectTo(port);
        socket.end(`r${i}`);
        expect((await h.collectUntilEnd(socket)).toString()).toBe(`r${i}`);
      }
    } finally {
      (tls as { connect: typeof tls.connect }).connect = original;
    }
    expect(resumed.length).toBe(3);
    expect(resumed.filter(Boolean).length).toBeGreaterThanOrEqual(2);
  });
});
