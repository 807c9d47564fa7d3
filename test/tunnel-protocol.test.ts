// The tunnel's wire formats: every message whole, byte by byte and coalesced with what follows; every
// error as early as the bytes prove it; random input never throws (fast-check).
import { createHmac } from 'node:crypto';
import net from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  clientProof,
  ControlMessageSchema,
  DATA_ERROR,
  dataMac,
  decodeMessage,
  encodeDataError,
  encodeDataHello,
  encodeFrame,
  encodePreamble,
  encodeStart,
  MAX_FRAME,
  parseConnectionStart,
  parseDataReply,
  parseFrame,
  safeEqual,
  serverProof,
  sessionKey,
  type ControlMessage,
} from '../src/tunnel/protocol.js';
import { parseExpose, parsePortRanges, TunnelOptionsError } from '../src/tunnel/options.js';
import { parseFingerprint } from '../src/tunnel/server-dialer.js';
import { Streams } from '../src/tunnel/server-streams.js';
import type { ServerContext, Session } from '../src/tunnel/server-context.js';
import { ipv6ToBytes, unmapIPv4 } from '../src/net/ip.js';
import { expectError, expectMessage, hex } from './protocol-helpers.js';

const SESSION = Buffer.alloc(16, 0xab);
const MAC = Buffer.alloc(32, 0xcd);

describe('connection start (preamble, data hello)', () => {
  it('parses a control preamble and a data hello, whole, byte by byte, and coalesced', () => {
    const control = expectMessage(parseConnectionStart, encodePreamble('control'));
    expect(control).toMatchObject({ kind: 'control', version: 1, consumed: 8 });
    expect(encodePreamble('control')).toEqual(hex('53 50 54 4e 01 43 00 00'));
    const data = expectMessage(parseConnectionStart, encodeDataHello(SESSION, 0x0102030405, MAC));
    expect(data).toMatchObject({ kind: 'data', version: 1, requestId: 0x0102030405, consumed: 64 });
    if (data.kind !== 'data') throw new Error('not data');
    expect(data.sessionId).toEqual(SESSION);
    expect(data.mac).toEqual(MAC);
  });

  it('refuses a stranger at its first wrong byte', () => {
    expectError(parseConnectionStart, Buffer.from('GET / HTTP/1.1\r\n\r\n'), 'bad-magic');
    expectError(parseConnectionStart, hex('16 03 01 02 00 01'), 'bad-magic'); // TLS ClientHello
    expectError(parseConnectionStart, hex('53 50 54 58'), 'bad-magic');
  });

  it('names the kind and the versions it speaks when the version is unknown', () => {
    const control = expectError(parseConnectionStart, hex('53 50 54 4e 02 43 00 00'), 'unsupported-version', DATA_ERROR.UNSUPPORTED_VERSION);
    expect(control).toMatchObject({ kind: 'control', version: 2 });
    expect(control.status === 'error' && control.message).toMatch(/supported: 1/);
    expect(expectError(parseConnectionStart, hex('53 50 54 4e 09 44 00 00'), 'unsupported-version')).toMatchObject({ kind: 'data' });
  });

  it('refuses an unknown kind, reserved bytes set and a request id of 0', () => {
    expectError(parseConnectionStart, hex('53 50 54 4e 01 45 00 00'), 'bad-kind');
    expectError(parseConnectionStart, hex('53 50 54 4e 01 43 00 01'), 'bad-preamble');
    const zero = encodeDataHello(SESSION, 1, MAC);
    zero.writeBigUInt64BE(0n, 24);
    expectError(parseConnectionStart, zero, 'bad-request-id');
    const huge = encodeDataHello(SESSION, 1, MAC);
    huge.writeBigUInt64BE(2n ** 63n, 24);
    expectError(parseConnectionStart, huge, 'bad-request-id');
  });
});

describe('data reply (START, ERROR)', () => {
  it('parses START with an IPv4, an IPv6 and no client address', () => {
    const v4 = expectMessage(parseDataReply, encodeStart(7, 'web', { host: '192.0.2.1', port: 40000 }));
    expect(v4).toMatchObject({ type: 'start', streamId: 7, tunnel: 'web', client: { host: '192.0.2.1', port: 40000 } });
    expect(encodeStart(7, 'web', { host: '192.0.2.1', port: 40000 })).toEqual(hex('01 0000000000000007 03 776562 04 c0000201 9c40'));
    const mapped = expectMessage(parseDataReply, encodeStart(8, 'a', { host: '::ffff:127.0.0.1', port: 1 }));
    expect(mapped).toMatchObject({ client: { host: '127.0.0.1', port: 1 } });
    const v6 = expectMessage(parseDataReply, encodeStart(9, 'db.main-1', { host: '2001:db8::1', port: 5432 }));
    expect(v6).toMatchObject({ tunnel: 'db.main-1', client: { host: '2001:db8::1', port: 5432 } });
    expect(expectMessage(parseDataReply, encodeStart(10, 'x', null))).toMatchObject({ client: null });
  });

  it('parses ERROR, and cuts a long message to 255 bytes', () => {
    const error = expectMessage(parseDataReply, encodeDataError(DATA_ERROR.UNKNOWN_REQUEST, 'request 5 is unknown'));
    expect(error).toMatchObject({ type: 'error', code: 5, name: 'unknown-request', message: 'request 5 is unknown' });
    const long = parseDataReply(encodeDataError(DATA_ERROR.BAD_MAC, 'é'.repeat(300)));
    expect(long.status === 'ok' && long.type === 'error' && Buffer.byteLength(long.message)).toBeLessThanOrEqual(255);
  });

  it('refuses an unknown type, a bad name and a bad family', () => {
    expectError(parseDataReply, hex('07'), 'bad-reply');
    expectError(parseDataReply, hex('01 0000000000000001 00'), 'bad-name');
    expectError(parseDataReply, hex('01 0000000000000001 41'), 'bad-name');
    expectError(parseDataReply, hex('01 0000000000000001 02 2f61 00 0000'), 'bad-name');
    expectError(parseDataReply, hex('01 0000000000000001 01 61 05'), 'bad-family');
    expectError(parseDataReply, hex('01 0000000000000000 01 61 00 0000'), 'bad-stream-id');
  });

  it('round-trips any START', () => {
    const names = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/);
    const clients = fc.option(fc.record({ host: fc.oneof(fc.ipV4(), fc.ipV6()), port: fc.integer({ min: 0, max: 65535 }) }), { nil: null });
    fc.assert(
      fc.property(fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), names, clients, (streamId, name, client) => {
        const parsed = parseDataReply(encodeStart(streamId, name, client));
        expect(parsed).toMatchObject({ status: 'ok', type: 'start', streamId, tunnel: name });
        if (parsed.status !== 'ok' || parsed.type !== 'start') return;
        if (client === null) expect(parsed.client).toBeNull();
        else {
          expect(parsed.client!.port).toBe(client.port);
          const host = unmapIPv4(client.host);
          if (net.isIPv4(host)) expect(parsed.client!.host).toBe(host);
          else expect(ipv6ToBytes(parsed.client!.host)).toEqual(ipv6ToBytes(host));
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('control frames', () => {
  const hello: ControlMessage = { type: 'hello', nonce: Buffer.alloc(32, 1).toString('base64'), clientId: 'c1', pool: 2 };

  it('frames a message: length-prefixed JSON, whole, byte by byte and coalesced', () => {
    const frame = encodeFrame(hello);
    expect(frame.readUInt32BE(0)).toBe(frame.length - 4);
    const parsed = expectMessage(parseFrame, frame);
    expect(decodeMessage(parsed.body)).toEqual({ status: 'ok', message: hello });
  });

  it('refuses an oversized frame as soon as its length has arrived, and an empty one', () => {
    const big = Buffer.alloc(8);
    big.writeUInt32BE(MAX_FRAME + 1, 0);
    expectError(parseFrame, big, 'frame-too-large');
    expectError(parseFrame, hex('ffffffff'), 'frame-too-large');
    expectError(parseFrame, hex('00000000'), 'empty-frame');
    const max = Buffer.alloc(4 + MAX_FRAME, 0x20);
    max.writeUInt32BE(MAX_FRAME, 0);
    expect(parseFrame(max)).toMatchObject({ status: 'ok', consumed: 4 + MAX_FRAME });
  });

  it('decodes every message type and ignores unknown fields', () => {
    const b32 = Buffer.alloc(32, 7).toString('base64');
    const messages: ControlMessage[] = [
      hello,
      { type: 'challenge', nonce: b32 },
      { type: 'auth', proof: b32 },
      { type: 'welcome', sessionId: Buffer.alloc(16).toString('base64'), proof: b32, heartbeatInterval: 1000, heartbeatTimeout: 3000, pool: 0 },
      { type: 'register', tunnels: [{ name: 'web', port: 0 }] },
      { type: 'registered', tunnels: [{ name: 'web', ok: true, host: '127.0.0.1', port: 20000 }, { name: 'db', ok: false, code: 'port-in-use', message: 'taken' }] },
      { type: 'connect', id: 3 },
      { type: 'connect', id: 3, count: 64 },
      { type: 'connect-failed', id: 3, code: 'ECONNREFUSED' },
      { type: 'ping' },
      { type: 'pong' },
      { type: 'error', code: 'auth-failed', message: 'no' },
    ];
    for (const message of messages) {
      const decoded = decodeMessage(Buffer.from(JSON.stringify(message)));
      expect(decoded.status, JSON.stringify(message)).toBe('ok');
    }
    expect(decodeMessage(Buffer.from('{"type":"ping","future":1}'))).toEqual({ status: 'ok', message: { type: 'ping' } });
  });

  it('names what is wrong with a bad message, never echoing its content', () => {
    const secret = 'hunter2-secret-token';
    const cases = [
      'not json',
      '[]',
      '{}',
      `{"type":"${secret}"}`,
      `{"type":"auth","proof":"${secret}"}`,
      '{"type":"connect","id":0}',
      '{"type":"connect","id":1.5}',
      '{"type":"connect","id":1,"count":0}',
      '{"type":"connect","id":1,"count":65}',
      '{"type":"connect","id":1,"count":2.5}',
      `{"type":"connect","id":${Number.MAX_SAFE_INTEGER},"count":2}`,
      '{"type":"register","tunnels":[{"name":"bad/name","port":1}]}',
      '{"type":"register","tunnels":[]}',
      `{"type":"hello","nonce":"AAAA","clientId":"x"}`,
    ];
    for (const text of cases) {
      const decoded = decodeMessage(Buffer.from(text));
      expect(decoded, text).toMatchObject({ status: 'error', code: 'bad-message' });
      if (decoded.status === 'error') expect(decoded.message).not.toContain(secret);
    }
  });

  it('decodes the hot messages (connect, ping, pong) exactly as the schema does', () => {
    const ids = fc.oneof(fc.integer(), fc.double(), fc.constant(Number.MAX_SAFE_INTEGER + 1), fc.integer({ min: Number.MAX_SAFE_INTEGER - 70, max: Number.MAX_SAFE_INTEGER }), fc.string(), fc.constant(null), fc.constant(undefined));
    const counts = fc.oneof(fc.constant(undefined), fc.integer({ min: -2, max: 70 }), fc.double(), fc.string(), fc.constant(null));
    fc.assert(
      fc.property(fc.constantFrom('connect', 'ping', 'pong'), ids, counts, fc.boolean(), (type, id, count, extra) => {
        const value = { type, id, count, ...(extra ? { other: 1 } : {}) };
        const body = Buffer.from(JSON.stringify(value));
        const decoded = decodeMessage(body);
        const schema = ControlMessageSchema.safeParse(JSON.parse(body.toString()));
        expect(decoded.status).toBe(schema.success ? 'ok' : 'error');
        if (schema.success && decoded.status === 'ok') expect(decoded.message).toEqual(schema.data);
      }),
      { numRuns: 1000 },
    );
  });

  it('never throws on random frames or bodies', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const buf = Buffer.from(bytes);
        for (const parse of [parseFrame, parseConnectionStart, parseDataReply]) {
          const result = parse(buf);
          expect(['ok', 'incomplete', 'error']).toContain(result.status);
        }
        expect(['ok', 'error']).toContain(decodeMessage(buf).status);
      }),
      { numRuns: 3000 },
    );
  });

  it('gives the same result however a stream of frames is split', () => {
    const anyMessage = fc.oneof(
      fc.constant<ControlMessage>({ type: 'ping' }),
      fc.integer({ min: 1, max: 1e9 }).map((id): ControlMessage => ({ type: 'connect', id })),
      fc.string({ maxLength: 200 }).map((message): ControlMessage => ({ type: 'error', code: 'x', message })),
    );
    fc.assert(
      fc.property(fc.array(anyMessage, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 6 }), (messages, cuts) => {
        const stream = Buffer.concat(messages.map(encodeFrame));
        const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
        const decoded: unknown[] = [];
        let buffered = Buffer.alloc(0);
        let last = 0;
        for (const point of [...points, stream.length]) {
          buffered = Buffer.concat([buffered, stream.subarray(last, point)]);
          last = point;
          for (let frame = parseFrame(buffered); frame.status === 'ok'; frame = parseFrame(buffered)) {
            buffered = buffered.subarray(frame.consumed);
            const message = decodeMessage(frame.body);
            if (message.status === 'ok') decoded.push(message.message);
          }
        }
        expect(decoded).toEqual(messages);
      }),
      { numRuns: 500 },
    );
  });
});

describe('auth digests', () => {
  const cn = Buffer.alloc(32, 1);
  const sn = Buffer.alloc(32, 2);

  it('binds each proof to its purpose, both nonces and the client id', () => {
    const proof = clientProof('token', cn, sn, 'c1');
    expect(proof).toHaveLength(32);
    expect(clientProof('token', cn, sn, 'c2')).not.toEqual(proof);
    expect(clientProof('token', sn, cn, 'c1')).not.toEqual(proof);
    expect(clientProof('other', cn, sn, 'c1')).not.toEqual(proof);
    const sid = Buffer.alloc(16, 3);
    const values = [proof, serverProof('token', cn, sn, sid), sessionKey('token', cn, sn, sid)].map((b) => b.toString('hex'));
    expect(new Set(values).size).toBe(3);
    const key = sessionKey('token', cn, sn, sid);
    expect(dataMac(key, sid, 1)).not.toEqual(dataMac(key, sid, 2));
  });

  it('computes every digest as docs/tunnel-protocol.md writes it: HMAC-SHA256(key, label 00 fields), request ids as u64', () => {
    const hmac = (key: string | Buffer, ...parts: (string | Buffer)[]) => {
      const h = createHmac('sha256', key);
      for (const part of parts) h.update(part);
      return h.digest();
    };
    const sid = Buffer.alloc(16, 3);
    const id = Buffer.concat([Buffer.from([0, 2]), Buffer.from('c1')]);
    expect(clientProof('token', cn, sn, 'c1')).toEqual(hmac('token', 'splicer-tunnel/1 client\0', cn, sn, id));
    expect(serverProof('token', cn, sn, sid)).toEqual(hmac('token', 'splicer-tunnel/1 server\0', cn, sn, sid));
    const key = sessionKey('token', cn, sn, sid);
    expect(key).toEqual(hmac('token', 'splicer-tunnel/1 session\0', cn, sn, sid));
    // Ids past 2^32 and up to 2^53 - 1 (the largest a request id may be) keep every bit.
    for (const request of [1, 0xffff_ffff, 2 ** 32, 2 ** 32 + 5, 2 ** 40 + 2 ** 31, Number.MAX_SAFE_INTEGER]) {
      const u64 = Buffer.alloc(8);
      u64.writeBigUInt64BE(BigInt(request));
      expect(dataMac(key, sid, request)).toEqual(hmac(key, 'splicer-tunnel/1 data\0', sid, u64));
    }
  });

  it('compares in constant time, any lengths', () => {
    expect(safeEqual(Buffer.from('abc'), Buffer.from('abc'))).toBe(true);
    expect(safeEqual(Buffer.from('abc'), Buffer.from('abd'))).toBe(false);
    expect(safeEqual(Buffer.from('abc'), Buffer.from('abcd'))).toBe(false);
    expect(safeEqual(Buffer.alloc(0), Buffer.alloc(32))).toBe(false);
  });
});

describe('option text forms', () => {
  it('parses --expose', () => {
    expect(parseExpose('web=127.0.0.1:8080@20001')).toEqual({ name: 'web', local: { host: '127.0.0.1', port: 8080 }, remotePort: 20001 });
    expect(parseExpose('db=[::1]:5432@0')).toEqual({ name: 'db', local: { host: '::1', port: 5432 }, remotePort: 0 });
    expect(parseExpose('ssh=:22')).toEqual({ name: 'ssh', local: { host: '127.0.0.1', port: 22 }, remotePort: 0 });
    for (const bad of ['web', '=1.2.3.4:80', 'a b=1.2.3.4:80', 'web=1.2.3.4', 'web=1.2.3.4:80@x', 'web=1.2.3.4:80@70000', 'web=::1:80']) {
      expect(() => parseExpose(bad), bad).toThrow(TunnelOptionsError);
    }
  });

  it('parses --ports', () => {
    expect(parsePortRanges('20000-20100')).toEqual([{ from: 20000, to: 20100 }]);
    expect(parsePortRanges('8080, 9000-9001')).toEqual([{ from: 8080, to: 8080 }, { from: 9000, to: 9001 }]);
    for (const bad of ['', 'x', '0-10', '10-5', '1-70000', '1-2-3']) expect(() => parsePortRanges(bad), bad).toThrow(TunnelOptionsError);
  });

  it('parses a SHA-256 fingerprint as openssl and Node print it', () => {
    const hexText = 'ab'.repeat(32);
    const colons = hexText.toUpperCase().match(/../g)!.join(':');
    expect(parseFingerprint(hexText)).toEqual(Buffer.alloc(32, 0xab));
    expect(parseFingerprint(colons)).toEqual(Buffer.alloc(32, 0xab));
    expect(parseFingerprint(`sha256 Fingerprint=${colons}`)).toEqual(Buffer.alloc(32, 0xab));
    expect(() => parseFingerprint('abcd')).toThrow(/SHA-256/);
  });
});

describe('the server asking for data connections', () => {
  /** A session as the server keeps it, its sent messages kept; the pool holds `idle` connections. */
  function fakeSession(pool: number, batch: boolean) {
    const sent: ControlMessage[] = [];
    const session = {
      pool,
      batch,
      closed: false,
      waiting: [] as unknown[],
      idle: [] as unknown[],
      requests: new Map<number, { timer: NodeJS.Timeout; left: number }>(),
      nextRequest: 1,
      channel: { send: (m: ControlMessage) => sent.push(m) },
    };
    const streams = new Streams({ o: { dataTimeout: 60_000 }, events: undefined, closing: false, reject: () => {} } as unknown as ServerContext, () => undefined);
    /** Every asked-for id arrives and is parked (as serveData does, without a socket). */
    const arriveAll = () => {
      for (const [id, request] of session.requests) {
        session.requests.delete(id);
        if (--request.left === 0) clearTimeout(request.timer);
        session.idle.push({});
      }
    };
    const done = () => {
      for (const request of session.requests.values()) clearTimeout(request.timer);
    };
    return { sent, session, want: () => streams.want(session as unknown as Session), arriveAll, done };
  }

  it('asks a batching client for its whole pool in one connect, then for the missing half once half is used', () => {
    const { sent, session, want, arriveAll, done } = fakeSession(8, true);
    try {
      want();
      expect(sent).toEqual([{ type: 'connect', id: 1, count: 8 }]);
      arriveAll();
      want();
      expect(sent).toHaveLength(1);
      for (let used = 1; used <= 8; used++) {
        session.idle.pop();
        want();
        // Three used: the pool holds 5, nothing asked; the fourth: 4 in one message; then again at the eighth.
        expect(sent.length, `after ${used} used`).toBe(1 + Math.floor(used / 4));
        if (used % 4 === 0) {
          expect(sent.at(-1)).toEqual({ type: 'connect', id: 9 + (used / 4 - 1) * 4, count: 4 });
          arriveAll();
        }
      }
      // A public client waiting with the pool empty is asked for at once, whatever the threshold.
      session.idle.length = 0;
      session.waiting.push({});
      want();
      expect(sent.at(-1)).toEqual({ type: 'connect', id: 17, count: 9 });
    } finally {
      done();
    }
  });

  it('asks a client that does not batch for one data connection per connect, at once', () => {
    const { sent, session, want, arriveAll, done } = fakeSession(4, false);
    try {
      want();
      expect(sent).toEqual([1, 2, 3, 4].map((id) => ({ type: 'connect', id })));
      arriveAll();
      session.idle.pop();
      want();
      expect(sent.at(-1)).toEqual({ type: 'connect', id: 5 });
    } finally {
      done();
    }
  });
});
