import net from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { addressBytes, ipBytes, ipv4ToBytes, ipv4ToString, ipv6ToBytes, ipv6ToString, unmapIPv4 } from '../src/net/ip.js';
import { parseIp } from '../src/proxy/rules.js';

/** Node's parser as the oracle: does BlockList take `a` and `b` for the same IPv6 address? */
function sameToNode(a: string, b: string): boolean {
  const list = new net.BlockList();
  list.addAddress(a, 'ipv6');
  return list.check(b, 'ipv6');
}

const bytes16 = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((a) => Buffer.from(a));

describe('net/ip', () => {
  it('parses every IPv6 spelling fast-check makes as Node does, and prints it back to the same address', () => {
    fc.assert(
      fc.property(fc.ipV6(), (text) => {
        const bytes = ipv6ToBytes(text);
        expect(bytes).toHaveLength(16);
        const printed = ipv6ToString(bytes!);
        expect(net.isIPv6(printed)).toBe(true);
        expect(sameToNode(text, printed)).toBe(true);
        expect(ipv6ToBytes(printed)).toEqual(bytes);
      }),
      { numRuns: 500 },
    );
  });

  it('round-trips any 16 bytes through RFC 5952 text', () => {
    fc.assert(
      fc.property(bytes16, (bytes) => {
        const text = ipv6ToString(bytes);
        expect(ipv6ToBytes(text)).toEqual(bytes);
        expect(text).toBe(text.toLowerCase());
      }),
      { numRuns: 500 },
    );
  });

  it('round-trips IPv4', () => {
    fc.assert(
      fc.property(fc.ipV4(), (text) => {
        expect(ipv4ToString(ipv4ToBytes(text)!)).toBe(text);
        expect(ipBytes(text)).toEqual(ipv4ToBytes(text));
        expect(parseIp(text)).toEqual({ family: 4, value: BigInt(`0x${ipv4ToBytes(text)!.toString('hex')}`) });
      }),
    );
  });

  it('takes an IPv4-mapped address in any spelling for its IPv4 address', () => {
    fc.assert(
      fc.property(fc.ipV4(), fc.boolean(), (v4, dotted) => {
        const b = ipv4ToBytes(v4)!;
        const text = dotted ? `::FFFF:${v4}` : `0:0:0:0:0:ffff:${b.readUInt16BE(0).toString(16)}:${b.readUInt16BE(2).toString(16)}`;
        expect(ipBytes(text)).toEqual(b);
        expect(addressBytes(text)).toEqual(b);
        expect(unmapIPv4(text)).toBe(v4);
        expect(ipv6ToString(ipv6ToBytes(text)!)).toBe(`::ffff:${v4}`);
        expect(parseIp(text)?.family).toBe(4);
      }),
    );
  });

  it('knows an IP exactly when Node does (a zone allowed on IPv6 only)', () => {
    const text = fc.oneof(fc.string(), fc.ipV4(), fc.ipV6(), fc.ipV6().map((t) => `${t}%eth0`), fc.ipV4().map((t) => `${t}%eth0`), fc.stringMatching(/^[0-9a-fA-F:.%]{0,45}$/));
    fc.assert(
      fc.property(text, (t) => {
        const isIp = net.isIPv4(t) || net.isIPv6(t.replace(/%.*$/, ''));
        expect(ipBytes(t) !== undefined).toBe(isIp);
        expect(parseIp(t) !== undefined).toBe(isIp);
        if (!isIp) {
          expect(() => addressBytes(t)).toThrow(TypeError);
          expect(unmapIPv4(t)).toBe(t);
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('drops a zone', () => {
    expect(ipBytes('fe80::1%eth0')).toEqual(ipv6ToBytes('fe80::1'));
    expect(ipBytes('1.2.3.4%eth0')).toBeUndefined();
  });
});
