import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ipv6ToBytes, ipv6ToString } from '../src/net/ip.js';
import {
  encodeProxyHeader,
  encodeProxyV1,
  encodeProxyV2,
  parseProxyHeader,
  V1_MAX_LENGTH,
  V2_MAX_LENGTH,
  V2_SIGNATURE,
  type ProxyHeaderInput,
} from '../src/protocol/proxy-protocol.js';
import { expectError, expectMessage, TRAILING } from './protocol-helpers.js';

const v2 = (hexBody: string) => Buffer.concat([V2_SIGNATURE, Buffer.from(hexBody.replace(/ /g, ''), 'hex')]);

describe('PROXY v1', () => {
  it('parses TCP4, TCP6 and UNKNOWN lines whole, byte by byte and with the stream after them', () => {
    const tcp4 = expectMessage(parseProxyHeader, Buffer.from('PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n'));
    expect(tcp4.header).toEqual({
      version: 1,
      command: 'proxy',
      family: 'tcp4',
      source: { address: '192.0.2.7', port: 56324 },
      destination: { address: '198.51.100.1', port: 443 },
    });
    const tcp6 = expectMessage(parseProxyHeader, Buffer.from('PROXY TCP6 2001:DB8:0:0::1 ::1 0 65535\r\n'));
    expect(tcp6.header).toMatchObject({ family: 'tcp6', source: { address: '2001:db8::1', port: 0 }, destination: { address: '::1', port: 65535 } });
    expect(expectMessage(parseProxyHeader, Buffer.from('PROXY UNKNOWN\r\n')).header).toEqual({ version: 1, command: 'local' });
    // UNKNOWN may carry anything up to the CRLF (the spec: the receiver ignores it).
    expect(expectMessage(parseProxyHeader, Buffer.from('PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n')).header).toEqual({ version: 1, command: 'local' });
  });

  it('takes the longest line the spec allows (107 bytes: UNKNOWN with two full IPv6 addresses) and refuses one byte more', () => {
    const full = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
    const longest = Buffer.from(`PROXY UNKNOWN ${full} ${full} 65535 65535\r\n`);
    expect(longest.length).toBe(V1_MAX_LENGTH);
    expectMessage(parseProxyHeader, longest);
    expectMessage(parseProxyHeader, Buffer.from(`PROXY TCP6 ${full} ${full} 65535 65535\r\n`));
    const longer = Buffer.from(`PROXY UNKNOWN ${'x'.repeat(V1_MAX_LENGTH - 15)}\r\n`);
    expect(longer.length).toBe(V1_MAX_LENGTH + 1);
    expectError(parseProxyHeader, longer, 'too-long');
  });

  it('refuses malformed lines with the reason', () => {
    const bad: Array<[string, string]> = [
      ['PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\n', 'bad-v1'], // LF without CR
      ['PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\rX', 'bad-v1'],
      ['PROXY TCP5 192.0.2.7 198.51.100.1 1 2\r\n', 'bad-v1'],
      ['PROXY TCP4 192.0.2.7  198.51.100.1 1 2\r\n', 'bad-v1'], // two spaces
      ['PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n', 'bad-v1'],
      ['PROXY TCP4 ::1 198.51.100.1 1 2\r\n', 'bad-v1'], // IPv6 under TCP4
      ['PROXY TCP6 192.0.2.7 ::1 1 2\r\n', 'bad-v1'],
      ['PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n', 'bad-v1'], // a zone is no address on the wire
      ['PROXY TCP4 192.0.2.7 198.51.100.1 65536 2\r\n', 'bad-v1'],
      ['PROXY TCP4 192.0.2.7 198.51.100.1 01 2\r\n', 'bad-v1'],
      ['PROXY TCP4 192.0.2.7 198.51.100.1 -1 2\r\n', 'bad-v1'],
      ['PROXY TCP4 192.0.2.7 198.51.100.1 1 2 \r\n', 'bad-v1'],
      ['proxy TCP4 192.0.2.7 198.51.100.1 1 2\r\n', 'not-proxy-protocol'],
      ['\x05\x01\x00', 'not-proxy-protocol'], // a SOCKS5 greeting straight to the port
      ['CONNECT example.com:443 HTTP/1.1\r\n', 'not-proxy-protocol'],
      ['PROXY\r\n', 'not-proxy-protocol'],
    ];
    for (const [line, code] of bad) {
      const result = expectError(parseProxyHeader, Buffer.from(line, 'latin1'), code);
      expect(result.status === 'error' && result.message.length > 0, line).toBe(true);
    }
  });
});

describe('PROXY v2', () => {
  it('parses PROXY over TCP4 and TCP6, skipping TLVs', () => {
    const tcp4 = expectMessage(parseProxyHeader, v2('21 11 000c c0000207 c6336401 dc04 01bb'));
    expect(tcp4.header).toEqual({
      version: 2,
      command: 'proxy',
      family: 'tcp4',
      source: { address: '192.0.2.7', port: 56324 },
      destination: { address: '198.51.100.1', port: 443 },
    });
    // Two TLVs (ALPN "h2", a NOOP of 0 bytes) after the addresses.
    const withTlvs = expectMessage(parseProxyHeader, v2('21 11 0014 c0000207 c6336401 dc04 01bb 01 0002 6832 04 0000'));
    expect(withTlvs.header).toEqual(tcp4.header);
    const tcp6 = expectMessage(parseProxyHeader, v2(`21 21 0024 20010db8000000000000000000000001 ${'00'.repeat(15)}01 0050 0051`));
    expect(tcp6.header).toMatchObject({ family: 'tcp6', source: { address: '2001:db8::1', port: 80 }, destination: { address: '::1', port: 81 } });
  });

  it('takes LOCAL, and PROXY with family UNSPEC, as "use the connection\'s own addresses"', () => {
    expect(expectMessage(parseProxyHeader, v2('20 00 0000')).header).toEqual({ version: 2, command: 'local' });
    // LOCAL with an address block (HAProxy's health checks send one): skipped.
    expect(expectMessage(parseProxyHeader, v2('20 11 000c c0000207 c6336401 dc04 01bb')).header).toEqual({ version: 2, command: 'local' });
    expect(expectMessage(parseProxyHeader, v2('21 00 0003 aabbcc')).header).toEqual({ version: 2, command: 'local' });
  });

  it('refuses bad headers with the reason', () => {
    const bad: Array<[Buffer, string]> = [
      [v2('11 11 000c c0000207 c6336401 dc04 01bb'), 'bad-v2'], // version 1 in a v2 header
      [v2('22 11 000c c0000207 c6336401 dc04 01bb'), 'bad-v2'], // command 2
      [v2('21 41 000c c0000207 c6336401 dc04 01bb'), 'bad-v2'], // family 4
      [v2('21 13 000c c0000207 c6336401 dc04 01bb'), 'bad-v2'], // transport 3
      [v2('21 11 000b c0000207 c6336401 dc04 01'), 'bad-v2'], // shorter than the address block
      [v2('21 21 000c c0000207 c6336401 dc04 01bb'), 'bad-v2'], // INET6 with INET's length
      [v2('21 11 000e c0000207 c6336401 dc04 01bb 0100'), 'bad-v2'], // a TLV cut short
      [v2('21 11 0010 c0000207 c6336401 dc04 01bb 01 0002 68'), 'bad-v2'], // a TLV's value overruns
      [v2(`21 31 00d8 ${'00'.repeat(216)}`), 'unsupported'], // AF_UNIX
      [v2('21 12 000c c0000207 c6336401 dc04 01bb'), 'unsupported'], // UDP on a TCP listener
      [v2(`21 11 ${(V2_MAX_LENGTH - 15).toString(16).padStart(4, '0')}`), 'too-long'],
      [Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0b]), 'not-proxy-protocol'],
    ];
    for (const [bytes, code] of bad) expectError(parseProxyHeader, bytes, code);
  });
});

describe('encoders', () => {
  it('write what HAProxy writes', () => {
    const conn = { source: { address: '192.0.2.7', port: 56324 }, destination: { address: '198.51.100.1', port: 443 } };
    expect(encodeProxyV1(conn).toString()).toBe('PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n');
    expect(encodeProxyV2(conn).equals(v2('21 11 000c c0000207 c6336401 dc04 01bb'))).toBe(true);
    expect(encodeProxyV1(null).toString()).toBe('PROXY UNKNOWN\r\n');
    expect(encodeProxyV2(null).equals(v2('20 00 0000'))).toBe(true);
    // Node reports IPv4 clients of a dual-stack listener as IPv4-mapped: they go out as TCP4.
    const mapped = { source: { address: '::ffff:192.0.2.7', port: 1 }, destination: { address: '::ffff:198.51.100.1', port: 2 } };
    expect(encodeProxyV1(mapped).toString()).toBe('PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r\n');
    // One IPv4 and one IPv6 end: both as IPv6.
    const mixed = { source: { address: '192.0.2.7', port: 1 }, destination: { address: '::1', port: 2 } };
    expect(encodeProxyV1(mixed).toString()).toBe('PROXY TCP6 ::ffff:192.0.2.7 ::1 1 2\r\n');
    expect(() => encodeProxyV2({ ...conn, source: { address: '192.0.2.7', port: 70000 } })).toThrow(RangeError);
  });
});

const endpoint4 = fc.record({ address: fc.ipV4(), port: fc.integer({ min: 0, max: 65535 }) });
const endpoint6 = fc.record({ address: fc.ipV6().filter((a) => !a.toLowerCase().startsWith('::ffff:')), port: fc.integer({ min: 0, max: 65535 }) });
const connections: fc.Arbitrary<ProxyHeaderInput> = fc.oneof(
  fc.record({ source: endpoint4, destination: endpoint4 }),
  fc.record({ source: endpoint6, destination: endpoint6 }),
  fc.constant(null),
);
const canonical6 = (address: string) => ipv6ToString(ipv6ToBytes(address)!);

describe('properties', () => {
  it('encode → parse gives the connection back, in either version, with the stream after it untouched', () => {
    fc.assert(
      fc.property(connections, fc.constantFrom(1 as const, 2 as const), fc.uint8Array({ maxLength: 64 }), (conn, version, after) => {
        const header = encodeProxyHeader(version, conn);
        const result = parseProxyHeader(Buffer.concat([header, after]));
        expect(result.status).toBe('ok');
        if (result.status !== 'ok') return;
        expect(result.consumed).toBe(header.length);
        if (conn === null) {
          expect(result.header).toEqual({ version, command: 'local' });
          return;
        }
        expect(result.header.command).toBe('proxy');
        if (result.header.command !== 'proxy') return;
        const norm = (address: string) => (address.includes(':') ? canonical6(address) : address);
        expect(result.header.source).toEqual({ address: norm(conn.source.address), port: conn.source.port });
        expect(result.header.destination).toEqual({ address: norm(conn.destination.address), port: conn.destination.port });
      }),
      { numRuns: 500 },
    );
  });

  it('every proper prefix of a valid header is "incomplete"', () => {
    fc.assert(
      fc.property(connections, fc.constantFrom(1 as const, 2 as const), (conn, version) => {
        const header = encodeProxyHeader(version, conn);
        for (let i = 0; i < header.length; i++) expect(parseProxyHeader(Buffer.from(header.subarray(0, i))).status).toBe('incomplete');
      }),
      { numRuns: 200 },
    );
  });

  it('arbitrary bytes never throw, and an "ok" never consumes more than it was given', () => {
    const starts = fc.oneof(
      fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
      fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.concat([V2_SIGNATURE, Buffer.from(b)])),
      fc.uint8Array({ maxLength: 120 }).map((b) => Buffer.concat([Buffer.from('PROXY '), Buffer.from(b)])),
      fc.string({ maxLength: 110 }).map((s) => Buffer.from(`PROXY ${s}\r\n`)),
    );
    fc.assert(
      fc.property(starts, (bytes) => {
        const result = parseProxyHeader(bytes);
        expect(['incomplete', 'ok', 'error']).toContain(result.status);
        if (result.status === 'ok') expect(result.consumed).toBeLessThanOrEqual(bytes.length);
        if (result.status === 'error') expect(result.message).not.toBe('');
      }),
      { numRuns: 2000 },
    );
  });

  it('parsing a header coalesced with anything gives the same header', () => {
    fc.assert(
      fc.property(connections, fc.constantFrom(1 as const, 2 as const), (conn, version) => {
        const header = encodeProxyHeader(version, conn);
        expect(parseProxyHeader(Buffer.concat([header, TRAILING]))).toEqual(parseProxyHeader(header));
      }),
    );
  });
});
