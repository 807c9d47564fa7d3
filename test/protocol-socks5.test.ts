import net from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeHostname, encodeSocks5Address } from '../src/protocol/address.js';
import { ipv4ToBytes, ipv6ToBytes, ipv6ToString, unmapIPv4 } from '../src/net/ip.js';
import {
  AUTH_METHOD,
  encodeAuthStatus,
  encodeMethodSelection,
  encodeSocks5Auth,
  encodeSocks5Greeting,
  encodeSocks5Reply,
  encodeSocks5Request,
  encodeUdpDatagram,
  parseSocks5Auth,
  parseSocks5Greeting,
  parseSocks5Reply,
  parseSocks5Request,
  parseUdpDatagram,
  SOCKS5_REPLY,
  socks5ReplyForErrno,
} from '../src/protocol/socks5.js';
import { expectError, expectMessage, hex } from './protocol-helpers.js';

/** The canonical text parsers return for a host: IPs normalised, names unchanged. */
function canonical(host: string): string {
  const unmapped = unmapIPv4(host);
  if (net.isIPv4(unmapped)) return unmapped;
  const v6 = ipv6ToBytes(host);
  return v6 ? ipv6ToString(v6) : host;
}

const ports = fc.integer({ min: 0, max: 65535 });
const domains = fc.oneof(
  fc.domain(),
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 60 }).filter((s) => !s.includes('\0')),
).filter((h) => Buffer.byteLength(h) <= 255 && !net.isIP(h.replace(/%.*$/, '')));
const hosts = fc.oneof(fc.ipV4(), fc.ipV6(), domains);

describe('address codec', () => {
  it('formats IPv6 per RFC 5952, and IPv4-mapped as Node does', () => {
    const cases: Array<[string, string]> = [
      ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // first of two equal runs
      ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group stays
      ['::', '::'],
      ['::1', '::1'],
      ['1::', '1::'],
      ['FE80::ABCD%eth0', 'fe80::abcd'],
      ['::ffff:192.0.2.1', '::ffff:192.0.2.1'],
      ['::ffff:c000:0201', '::ffff:192.0.2.1'],
      ['::192.0.2.1', '::c000:201'],
    ];
    for (const [input, output] of cases) expect(ipv6ToString(ipv6ToBytes(input)!), input).toBe(output);
    expect(ipv6ToBytes('1:2:3')).toBeUndefined();
    expect(ipv6ToBytes('example.com')).toBeUndefined();
    expect(ipv4ToBytes('1.2.3.256')).toBeUndefined();
  });

  it('agrees with the WHATWG URL serialiser on every IPv6 address', () => {
    fc.assert(
      fc.property(fc.ipV6(), (address) => {
        const ours = ipv6ToString(ipv6ToBytes(address)!);
        expect(net.isIPv6(ours)).toBe(true);
        expect(ipv6ToBytes(ours)).toEqual(ipv6ToBytes(address));
        if (!/^::ffff:\d/.test(ours)) expect(`[${ours}]`).toBe(new URL(`http://[${address}]/`).hostname);
      }),
      { numRuns: 2000 },
    );
  });

  it('refuses host names that cannot name a host', () => {
    expect(decodeHostname(Buffer.from('bücher.de'))).toBe('bücher.de');
    expect(decodeHostname(hex('61 00 62'))).toBeUndefined();
    expect(decodeHostname(hex('61 ff'))).toBeUndefined();
  });

  it('encodes IPv4-mapped IPv6 as IPv4, which an IPv4-only client can use', () => {
    expect(unmapIPv4('::ffff:127.0.0.1')).toBe('127.0.0.1');
    expect(unmapIPv4('0:0:0:0:0:FFFF:7f00:1')).toBe('127.0.0.1');
    expect(unmapIPv4('::1')).toBe('::1');
    expect(unmapIPv4('example.com')).toBe('example.com');
    expect(encodeSocks5Address('::ffff:10.0.0.1', 80)).toEqual(hex('01 0a000001 0050'));
  });

  it('refuses to encode what the wire cannot carry', () => {
    expect(() => encodeSocks5Address('a'.repeat(256), 1)).toThrow(RangeError);
    expect(() => encodeSocks5Address('a\0b', 1)).toThrow(RangeError);
    expect(() => encodeSocks5Address('a', 65536)).toThrow(RangeError);
    expect(() => encodeSocks5Address('a', 1.5)).toThrow(RangeError);
    expect(encodeSocks5Address('a'.repeat(255), 1)).toHaveLength(1 + 1 + 255 + 2);
  });
});

describe('greeting', () => {
  it('parses the methods offered, whole, byte by byte and coalesced', () => {
    expect(expectMessage(parseSocks5Greeting, hex('05 01 00')).methods).toEqual([0]);
    expect(expectMessage(parseSocks5Greeting, hex('05 02 00 02')).methods).toEqual([0, 2]);
    const all = Array.from({ length: 255 }, (_, i) => i);
    expect(expectMessage(parseSocks5Greeting, Buffer.from([5, 255, ...all])).methods).toEqual(all);
  });

  it('refuses NMETHODS 0 and other versions with method FF', () => {
    expectError(parseSocks5Greeting, hex('05 00'), 'ERR_NO_METHODS', 0xff);
    expectError(parseSocks5Greeting, hex('04 01 00'), 'ERR_BAD_VERSION', 0xff);
    expectError(parseSocks5Greeting, Buffer.from('GET / HTTP/1.1\r\n'), 'ERR_BAD_VERSION', 0xff);
  });

  it('encodes method selection', () => {
    expect(encodeMethodSelection(AUTH_METHOD.NO_AUTH)).toEqual(hex('05 00'));
    expect(encodeMethodSelection(AUTH_METHOD.USERNAME_PASSWORD)).toEqual(hex('05 02'));
    expect(encodeMethodSelection(AUTH_METHOD.NO_ACCEPTABLE)).toEqual(hex('05 ff'));
    expect(encodeSocks5Greeting([0, 2])).toEqual(hex('05 02 00 02'));
    expect(() => encodeSocks5Greeting([])).toThrow(RangeError);
  });
});

describe('username/password (RFC 1929)', () => {
  it('parses credentials, whole, byte by byte and coalesced', () => {
    const { credentials } = expectMessage(parseSocks5Auth, hex('01 04 75736572 06 736563726574'));
    expect(credentials).toEqual({ username: 'user', password: 'secret', rawUsername: Buffer.from('user'), rawPassword: Buffer.from('secret') });
  });

  it('reports empty username and password instead of refusing them', () => {
    expect(expectMessage(parseSocks5Auth, hex('01 00 00')).credentials).toMatchObject({ username: '', password: '' });
    expect(expectMessage(parseSocks5Auth, hex('01 01 61 00')).credentials).toMatchObject({ username: 'a', password: '' });
    expect(expectMessage(parseSocks5Auth, hex('01 00 01 62')).credentials).toMatchObject({ username: '', password: 'b' });
  });

  it('copies the raw bytes out of the input buffer', () => {
    const buf = hex('01 01 61 01 62');
    const result = parseSocks5Auth(buf);
    buf.fill(0);
    expect(result).toMatchObject({ credentials: { rawUsername: Buffer.from('a'), rawPassword: Buffer.from('b') } });
  });

  it('refuses a version other than 01 with status 01, without echoing secrets', () => {
    const error = expectError(parseSocks5Auth, encodeSocks5Auth('alice', 'hunter2').fill(5, 0, 1), 'ERR_BAD_AUTH_VERSION', 0x01);
    expect(JSON.stringify(error)).not.toMatch(/alice|hunter2/);
  });

  it('round-trips any credentials up to 255 bytes', () => {
    const field = fc.uint8Array({ maxLength: 255 }).map((a) => Buffer.from(a));
    fc.assert(
      fc.property(field, field, (user, pass) => {
        const result = parseSocks5Auth(encodeSocks5Auth(user, pass));
        expect(result).toMatchObject({ status: 'ok', credentials: { rawUsername: user, rawPassword: pass } });
      }),
    );
  });

  it('encodes the status', () => {
    expect(encodeAuthStatus(true)).toEqual(hex('01 00'));
    expect(encodeAuthStatus(false)).toEqual(hex('01 01'));
  });
});

describe('request', () => {
  it('parses each command and address type, whole, byte by byte and coalesced', () => {
    expect(expectMessage(parseSocks5Request, hex('05 01 00 01 7f000001 0050')).request).toEqual({ command: 'connect', host: '127.0.0.1', port: 80, addressType: 'ipv4' });
    expect(expectMessage(parseSocks5Request, hex('05 02 00 04 20010db8000000000000000000000001 01bb')).request).toEqual({ command: 'bind', host: '2001:db8::1', port: 443, addressType: 'ipv6' });
    expect(expectMessage(parseSocks5Request, hex('05 03 00 03 0b 6578616d706c652e636f6d ffff')).request).toEqual({ command: 'udp-associate', host: 'example.com', port: 65535, addressType: 'domain' });
    // UDP ASSOCIATE with an all-zero DST: clients disagree on what to send, so it is accepted.
    expect(expectMessage(parseSocks5Request, hex('05 03 00 01 00000000 0000')).request).toMatchObject({ host: '0.0.0.0', port: 0 });
  });

  it('tolerates a non-zero RSV byte', () => {
    expect(expectMessage(parseSocks5Request, hex('05 01 ff 01 01020304 0001')).request).toMatchObject({ host: '1.2.3.4', port: 1 });
  });

  it('accepts a 255-byte domain', () => {
    const name = 'a'.repeat(255);
    expect(expectMessage(parseSocks5Request, encodeSocks5Request('connect', name, 1)).request.host).toBe(name);
  });

  it('refuses each malformed request with the reply code to send', () => {
    expectError(parseSocks5Request, hex('05 04 00 01 01020304 0050'), 'ERR_BAD_COMMAND', SOCKS5_REPLY.COMMAND_NOT_SUPPORTED);
    expectError(parseSocks5Request, hex('05 00 00 01 01020304 0050'), 'ERR_BAD_COMMAND', 0x07);
    expectError(parseSocks5Request, hex('05 01 00 02 01020304 0050'), 'ERR_BAD_ATYP', SOCKS5_REPLY.ADDRESS_TYPE_NOT_SUPPORTED);
    expectError(parseSocks5Request, hex('05 01 00 05 01020304 0050'), 'ERR_BAD_ATYP', 0x08);
    expectError(parseSocks5Request, hex('05 01 00 03 00 0050'), 'ERR_EMPTY_DOMAIN', SOCKS5_REPLY.GENERAL_FAILURE);
    expectError(parseSocks5Request, hex('05 01 00 03 03 610062 0050'), 'ERR_BAD_DOMAIN', 0x01);
    expectError(parseSocks5Request, hex('04 01 00 01 01020304 0050'), 'ERR_BAD_VERSION', 0x01);
  });

  it('reads back any request a client encodes', () => {
    const commands = fc.constantFrom('connect', 'bind', 'udp-associate' as const);
    fc.assert(
      fc.property(commands, hosts, ports, (command, host, port) => {
        const bytes = encodeSocks5Request(command, host, port);
        const result = parseSocks5Request(Buffer.concat([bytes, Buffer.from('payload')]));
        expect(result).toEqual({ status: 'ok', request: { command, host: canonical(host), port, addressType: expect.any(String) }, consumed: bytes.length });
      }),
      { numRuns: 1000 },
    );
  });
});

describe('reply', () => {
  it('is always full length, with the ATYP of the bound address', () => {
    expect(encodeSocks5Reply(SOCKS5_REPLY.SUCCEEDED, { host: '10.1.2.3', port: 1080 })).toEqual(hex('05 00 00 01 0a010203 0438'));
    expect(encodeSocks5Reply(0x00, { host: '::1', port: 2 })).toEqual(hex('05 00 00 04 00000000000000000000000000000001 0002'));
    expect(encodeSocks5Reply(0x00, { host: 'proxy.example', port: 3 })).toEqual(Buffer.concat([hex('05 00 00 03 0d'), Buffer.from('proxy.example'), hex('0003')]));
    // Failures too: a 2-byte `05 REP` reply breaks clients.
    expect(encodeSocks5Reply(SOCKS5_REPLY.CONNECTION_REFUSED, { host: '', port: 0 })).toEqual(hex('05 05 00 01 00000000 0000'));
    expect(encodeSocks5Reply(SOCKS5_REPLY.GENERAL_FAILURE)).toEqual(hex('05 01 00 01 00000000 0000'));
  });

  it('parses replies, whole, byte by byte and coalesced', () => {
    expect(expectMessage(parseSocks5Reply, hex('05 00 00 01 0a010203 0438')).reply).toEqual({ rep: 0, host: '10.1.2.3', port: 1080, addressType: 'ipv4' });
    expect(expectMessage(parseSocks5Reply, hex('05 04 00 03 01 61 0001')).reply).toEqual({ rep: 4, host: 'a', port: 1, addressType: 'domain' });
  });

  it('round-trips any reply code and bound address', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 255 }), hosts, ports, (rep, host, port) => {
        const bytes = encodeSocks5Reply(rep, { host, port });
        expect(parseSocks5Reply(bytes)).toMatchObject({ status: 'ok', reply: { rep, host: canonical(host), port }, consumed: bytes.length });
      }),
      { numRuns: 1000 },
    );
  });

  it('maps errno names to reply codes', () => {
    const expected: Record<string, number> = {
      ECONNREFUSED: 0x05,
      ENETUNREACH: 0x03,
      ENETDOWN: 0x03,
      EHOSTUNREACH: 0x04,
      ENOTFOUND: 0x04,
      EAI_AGAIN: 0x04,
      ETIMEDOUT: 0x06,
      EAFNOSUPPORT: 0x08,
      EACCES: 0x02,
      ERR_DENIED: 0x02,
      ECONNRESET: 0x01,
      toString: 0x01,
      '': 0x00,
    };
    for (const [code, rep] of Object.entries(expected)) expect(socks5ReplyForErrno(code), code).toBe(rep);
    expect(socks5ReplyForErrno(undefined)).toBe(0);
  });
});

describe('UDP datagrams', () => {
  it('parses the header and leaves DATA as a view', () => {
    const buf = hex('0000 00 01 08080808 0035 abcdef');
    const result = parseUdpDatagram(buf);
    expect(result).toEqual({ status: 'ok', datagram: { frag: 0, host: '8.8.8.8', port: 53, addressType: 'ipv4', data: hex('abcdef') } });
    expect(parseUdpDatagram(hex('0000 02 03 01 61 0001'))).toEqual({ status: 'ok', datagram: { frag: 2, host: 'a', port: 1, addressType: 'domain', data: Buffer.alloc(0) } });
  });

  it('encodes exact bytes', () => {
    expect(encodeUdpDatagram('8.8.8.8', 53, hex('abcdef'))).toEqual(hex('0000 00 01 08080808 0035 abcdef'));
    expect(encodeUdpDatagram('::', 1, Buffer.alloc(0))).toEqual(hex('0000 00 04 00000000000000000000000000000000 0001'));
  });

  it('reports short and malformed datagrams (to drop, no reply)', () => {
    const full = hex('0000 00 04 00000000000000000000000000000001 0035');
    for (let i = 0; i < full.length; i++) expect(parseUdpDatagram(full.subarray(0, i)), `length ${i}`).toMatchObject({ status: 'error', code: 'ERR_SHORT_DATAGRAM' });
    expect(parseUdpDatagram(full).status).toBe('ok');
    expect(parseUdpDatagram(hex('0000 00 02 01020304 0035'))).toMatchObject({ status: 'error', code: 'ERR_BAD_ATYP' });
    expect(parseUdpDatagram(hex('0000 00 03 00 0035'))).toMatchObject({ status: 'error', code: 'ERR_EMPTY_DOMAIN' });
    expect(parseUdpDatagram(hex('0000 00 01 01020304 0035'))).not.toHaveProperty('reply');
  });

  it('round-trips any address, port and payload', () => {
    fc.assert(
      fc.property(hosts, ports, fc.uint8Array({ maxLength: 512 }), (host, port, data) => {
        const result = parseUdpDatagram(encodeUdpDatagram(host, port, Buffer.from(data)));
        expect(result).toMatchObject({ status: 'ok', datagram: { frag: 0, host: canonical(host), port, data: Buffer.from(data) } });
      }),
      { numRuns: 1000 },
    );
  });
});

describe('random input', () => {
  const buffers = fc.oneof(
    fc.uint8Array({ maxLength: 400 }),
    fc.uint8Array({ maxLength: 400 }).map((a) => Uint8Array.from([5, ...a])),
    fc.uint8Array({ maxLength: 300 }).map((a) => Uint8Array.from([1, ...a])),
    fc.tuple(fc.integer({ min: 0, max: 5 }), fc.uint8Array({ maxLength: 300 })).map(([cmd, a]) => Uint8Array.from([5, cmd, 0, ...a])),
  );
  const parsers = { parseSocks5Greeting, parseSocks5Auth, parseSocks5Request, parseSocks5Reply };

  for (const [name, parse] of Object.entries(parsers)) {
    it(`${name} never throws, and consumed marks exactly one message`, () => {
      fc.assert(
        fc.property(buffers, (bytes) => {
          const buf = Buffer.from(bytes);
          const result = parse(buf);
          expect(['incomplete', 'ok', 'error']).toContain(result.status);
          if (result.status === 'ok') {
            expect(result.consumed).toBeLessThanOrEqual(buf.length);
            expect(parse(buf.subarray(0, result.consumed))).toEqual(result);
            if (result.consumed > 0) expect(parse(buf.subarray(0, result.consumed - 1)).status).toBe('incomplete');
          }
          if (result.status === 'error') expect(result.reply).toBeTypeOf('number');
        }),
        { numRuns: 2000 },
      );
    });
  }

  it('parseUdpDatagram never throws', () => {
    fc.assert(
      fc.property(buffers, (bytes) => {
        const result = parseUdpDatagram(Buffer.from(bytes));
        if (result.status === 'ok') expect(result.datagram.data.length).toBeLessThanOrEqual(bytes.length);
      }),
      { numRuns: 2000 },
    );
  });
});
