import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeSocks4Reply, parseSocks4Request, SOCKS4_REPLY, socks4ReplyForErrno } from '../src/protocol/socks4.js';
import { expectError, expectMessage, hex } from './protocol-helpers.js';

function request(cd: number, port: number, ip: number[], userId: string, hostname?: string): Buffer {
  const head = Buffer.alloc(8);
  head[0] = 4;
  head[1] = cd;
  head.writeUInt16BE(port, 2);
  Buffer.from(ip).copy(head, 4);
  const parts = [head, Buffer.from(userId), Buffer.of(0)];
  if (hostname !== undefined) parts.push(Buffer.from(hostname), Buffer.of(0));
  return Buffer.concat(parts);
}

describe('parseSocks4Request', () => {
  it('parses CONNECT with a user id, whole, byte by byte and coalesced', () => {
    const ok = expectMessage(parseSocks4Request, hex('04 01 0050 5db8d822 66726564 00'));
    expect(ok.request).toEqual({ command: 'connect', port: 80, host: '93.184.216.34', isSocks4a: false, userId: 'fred' });
  });

  it('parses BIND with an empty user id', () => {
    const ok = expectMessage(parseSocks4Request, request(2, 65535, [10, 0, 0, 1], ''));
    expect(ok.request).toEqual({ command: 'bind', port: 65535, host: '10.0.0.1', isSocks4a: false, userId: '' });
  });

  it('parses SOCKS4a: 0.0.0.x with x != 0, then the hostname', () => {
    const ok = expectMessage(parseSocks4Request, request(1, 443, [0, 0, 0, 1], 'me', 'example.com'));
    expect(ok.request).toEqual({ command: 'connect', port: 443, host: 'example.com', isSocks4a: true, userId: 'me' });
    const ok255 = expectMessage(parseSocks4Request, request(1, 1, [0, 0, 0, 255], '', 'a.b'));
    expect(ok255.request.isSocks4a).toBe(true);
  });

  it('parses BIND to 0.0.0.0 ("any peer", as the npm socks client sends it), whole, byte by byte and coalesced', () => {
    const ok = expectMessage(parseSocks4Request, hex('04 02 0000 00000000 00'));
    expect(ok.request).toEqual({ command: 'bind', port: 0, host: '0.0.0.0', isSocks4a: false, userId: '' });
    const withUser = expectMessage(parseSocks4Request, request(2, 21, [0, 0, 0, 0], 'ftp'));
    expect(withUser.request).toEqual({ command: 'bind', port: 21, host: '0.0.0.0', isSocks4a: false, userId: 'ftp' });
  });

  it('treats 0.x.y.z with a non-zero middle byte as plain SOCKS4', () => {
    const ok = expectMessage(parseSocks4Request, request(1, 1, [0, 0, 1, 1], 'u'));
    expect(ok.request).toMatchObject({ host: '0.0.1.1', isSocks4a: false });
  });

  it('accepts user id and hostname of exactly the cap, and refuses one byte more', () => {
    const at = request(1, 80, [0, 0, 0, 9], 'u'.repeat(255), 'h'.repeat(255));
    expect(expectMessage(parseSocks4Request, at).request.host).toBe('h'.repeat(255));
    expectError(parseSocks4Request, request(1, 80, [1, 2, 3, 4], 'u'.repeat(256)), 'ERR_USERID_TOO_LONG', 0x5b);
    expectError(parseSocks4Request, request(1, 80, [0, 0, 0, 1], 'u', 'h'.repeat(256)), 'ERR_HOSTNAME_TOO_LONG', 0x5b);
  });

  it('reports the overflow before the NUL arrives (a client that never sends one)', () => {
    const endless = Buffer.concat([hex('04 01 0050 01020304'), Buffer.alloc(256, 0x41)]);
    expect(parseSocks4Request(endless.subarray(0, 8 + 255))).toEqual({ status: 'incomplete' });
    expect(parseSocks4Request(endless)).toMatchObject({ status: 'error', code: 'ERR_USERID_TOO_LONG' });
  });

  it('honours configured limits', () => {
    const limits = { maxUserIdBytes: 4, maxHostnameBytes: 3 };
    expect(parseSocks4Request(request(1, 1, [1, 1, 1, 1], 'four'), limits).status).toBe('ok');
    expect(parseSocks4Request(request(1, 1, [1, 1, 1, 1], 'fives'), limits)).toMatchObject({ code: 'ERR_USERID_TOO_LONG' });
    expect(parseSocks4Request(request(1, 1, [0, 0, 0, 1], '', 'abcd'), limits)).toMatchObject({ code: 'ERR_HOSTNAME_TOO_LONG' });
  });

  it('refuses each malformed request with 5B as soon as it can tell', () => {
    expectError(parseSocks4Request, request(1, 80, [1, 2, 3, 4], 'x').fill(5, 0, 1), 'ERR_BAD_VERSION', 0x5b);
    expectError(parseSocks4Request, request(3, 80, [1, 2, 3, 4], 'x'), 'ERR_BAD_COMMAND', 0x5b);
    expectError(parseSocks4Request, request(0, 80, [1, 2, 3, 4], 'x'), 'ERR_BAD_COMMAND', 0x5b);
    // 0.0.0.0 is neither an address to connect to (Linux: the local host) nor SOCKS4a.
    const zero = expectError(parseSocks4Request, request(1, 80, [0, 0, 0, 0], 'x'), 'ERR_ZERO_ADDRESS', 0x5b);
    expect(parseSocks4Request(hex('04 01 0050 00000000'))).toEqual(zero);
    expect(parseSocks4Request(hex('04 01 0000 00000000 00'))).toEqual(zero);
    expectError(parseSocks4Request, request(1, 80, [0, 0, 0, 1], 'x', ''), 'ERR_EMPTY_HOSTNAME', 0x5b);
    expectError(parseSocks4Request, Buffer.concat([request(1, 80, [0, 0, 0, 1], 'x'), hex('ff fe 00')]), 'ERR_BAD_HOSTNAME', 0x5b);
  });

  it('never throws on random input and never consumes more than it was given', () => {
    const buffers = fc.oneof(
      fc.uint8Array({ maxLength: 600 }),
      fc.uint8Array({ maxLength: 600 }).map((a) => Uint8Array.from([4, ...a])),
      fc.uint8Array({ maxLength: 40 }).map((a) => Uint8Array.from([4, 1, 0, 80, 0, 0, 0, 7, ...a])),
    );
    fc.assert(
      fc.property(buffers, fc.nat(300), fc.nat(300), (bytes, maxUserIdBytes, maxHostnameBytes) => {
        const buf = Buffer.from(bytes);
        const result = parseSocks4Request(buf, { maxUserIdBytes, maxHostnameBytes });
        if (result.status === 'ok') {
          expect(result.consumed).toBeLessThanOrEqual(buf.length);
          // The same message alone parses the same: consumed marks exactly the message.
          expect(parseSocks4Request(buf.subarray(0, result.consumed), { maxUserIdBytes, maxHostnameBytes })).toEqual(result);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('reads back what a client encodes', () => {
    const text = fc.string({ maxLength: 40 }).filter((s) => !s.includes('\0'));
    fc.assert(
      fc.property(fc.constantFrom(1, 2), fc.integer({ min: 0, max: 65535 }), fc.ipV4(), text, (cd, port, ip, userId) => {
        fc.pre(!ip.startsWith('0.0.0.') || (ip === '0.0.0.0' && cd === 2));
        const result = parseSocks4Request(request(cd, port, ip.split('.').map(Number), userId));
        expect(result).toMatchObject({ status: 'ok', request: { command: cd === 1 ? 'connect' : 'bind', port, host: ip, userId } });
      }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 255 }), fc.domain(), (x, host) => {
        fc.pre(Buffer.byteLength(host) <= 255);
        expect(parseSocks4Request(request(1, 80, [0, 0, 0, x], 'u', host))).toMatchObject({ status: 'ok', request: { host, isSocks4a: true } });
      }),
    );
  });
});

describe('encodeSocks4Reply', () => {
  it('writes 8 bytes starting with 0, not 4', () => {
    expect(encodeSocks4Reply(SOCKS4_REPLY.GRANTED)).toEqual(hex('00 5a 0000 00000000'));
    expect(encodeSocks4Reply(0x5b, 1080, '192.168.1.2')).toEqual(hex('00 5b 0438 c0a80102'));
    expect(encodeSocks4Reply(SOCKS4_REPLY.IDENTD_UNREACHABLE, 65535, '255.255.255.255')).toEqual(hex('00 5c ffff ffffffff'));
    expect(encodeSocks4Reply(SOCKS4_REPLY.IDENTD_MISMATCH)).toEqual(hex('00 5d 0000 00000000'));
  });

  it('refuses what the reply cannot carry', () => {
    expect(() => encodeSocks4Reply(0x5a, 70000)).toThrow(RangeError);
    expect(() => encodeSocks4Reply(0x5a, 1, '::1')).toThrow(/only IPv4/);
    // A dual-stack listener reports IPv4 addresses in mapped form: those fit.
    expect(encodeSocks4Reply(0x5a, 1, '::ffff:10.0.0.1')).toEqual(hex('00 5a 0001 0a000001'));
  });

  it('maps outcomes: success 5A, any error 5B', () => {
    expect(socks4ReplyForErrno(undefined)).toBe(0x5a);
    expect(socks4ReplyForErrno(null)).toBe(0x5a);
    for (const code of ['ECONNREFUSED', 'ETIMEDOUT', 'ENOTFOUND', 'ERR_DENIED', 'whatever']) expect(socks4ReplyForErrno(code)).toBe(0x5b);
  });
});
