// The tunnel's mux connection without sockets: its hello, its reply, the control messages' `mux`
// fields (pure parsers over Buffers), and the client options it rules out.
import { describe, expect, it } from 'vitest';
import { createTunnelClient } from '../src/index.js';
import { dataMac, decodeMessage, encodeDataHello, parseConnectionStart, parseMuxReply, REPLY } from '../src/tunnel/protocol.js';

const HOST = '127.0.0.1';
const TOKEN = 'test-token-0123456789abcdef';

describe('the mux connection on the wire', () => {
  const session = Buffer.alloc(16, 7);
  const key = Buffer.alloc(32, 9);

  it("starts with preamble 'M' and the data hello, its MAC under a label of its own", () => {
    const hello = encodeDataHello(session, 5, dataMac(key, session, 5, 'mux'), 'mux');
    expect(hello.subarray(0, 6).toString('latin1')).toBe('SPTN\x01M');
    expect(parseConnectionStart(hello)).toMatchObject({ status: 'ok', kind: 'mux', requestId: 5, mac: dataMac(key, session, 5, 'mux') });
    expect(dataMac(key, session, 5, 'mux').equals(dataMac(key, session, 5, 'data'))).toBe(false);
    // Byte by byte: incomplete until the last.
    for (let n = 0; n < hello.length; n++) expect(parseConnectionStart(hello.subarray(0, n)).status).toBe('incomplete');
  });

  it('reads the reply: MUX (one byte, then yamux) or ERROR; START is not a mux reply', () => {
    expect(parseMuxReply(Buffer.alloc(0)).status).toBe('incomplete');
    expect(parseMuxReply(Buffer.from([REPLY.MUX, 0, 1, 0, 1]))).toEqual({ status: 'ok', type: 'mux', consumed: 1 });
    expect(parseMuxReply(Buffer.from([REPLY.ERROR, 7, 3, 0x61, 0x62]))).toEqual({ status: 'incomplete' });
    expect(parseMuxReply(Buffer.from([REPLY.ERROR, 7, 2, 0x61, 0x62]))).toMatchObject({ status: 'ok', type: 'error', name: 'surplus', message: 'ab' });
    expect(parseMuxReply(Buffer.from([REPLY.START, 0, 0]))).toMatchObject({ status: 'error', code: 'bad-reply' });
  });

  it('has hello, welcome and connect say mux, and a connect for the mux connection is never read as one for data connections', () => {
    const body = (m: object) => Buffer.from(JSON.stringify(m));
    expect(decodeMessage(body({ type: 'connect', id: 3, mux: true }))).toEqual({ status: 'ok', message: { type: 'connect', id: 3, mux: true } });
    expect(decodeMessage(body({ type: 'connect', id: 3, mux: 'yes' }))).toMatchObject({ status: 'error', code: 'bad-message' });
    expect(decodeMessage(body({ type: 'hello', nonce: Buffer.alloc(32).toString('base64'), clientId: 'x', pool: 0, mux: true }))).toMatchObject({ status: 'ok', message: { mux: true } });
  });
});

describe('mux client options', () => {
  it('refuses a pool, the native data path and the splice engine with mux, naming the option', () => {
    const base = { server: { host: HOST, port: 1 }, token: TOKEN, tunnels: [{ name: 'web', local: { host: HOST, port: 1 } }] };
    expect(() => createTunnelClient({ ...base, mux: true, pool: 2 })).toThrow(/pool: a pool of data connections does not apply with mux/);
    expect(() => createTunnelClient({ ...base, mux: true, dataPath: 'native' })).toThrow(/dataPath: mux streams/);
    expect(() => createTunnelClient({ ...base, mux: { maxWindow: 1024 } })).toThrow(/mux/);
    expect(() => createTunnelClient({ ...base, mux: true, engine: 'splice' })).toThrow(/engine: mux streams are carried by the JS engine/);
    expect(() => createTunnelClient({ ...base, mux: { maxStreams: 8, keepaliveInterval: 0 } })).not.toThrow();
  });
});
