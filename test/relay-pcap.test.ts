// The pcap writer without tshark: checksum vectors, header layout, splitting, sequence numbers.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { fold, internetChecksum, onesSum } from '../src/pcap/checksum.js';
import { addressBytes } from '../src/net/ip.js';
import {
  ConversationStateError, MAX_SEGMENT, PCAP_GLOBAL_HEADER, SNAPLEN, TCP_FLAGS, TcpConversation, timestampNow,
} from '../src/pcap/tcp-conversation.js';
import { parsePcap, pseudoRandomBytes, record } from './relay-pcap-records.js';

const { FIN, SYN, RST, PSH, ACK } = TCP_FLAGS;
const v4 = () => new TcpConversation({ address: '10.1.2.3', port: 40001 }, { address: '192.0.2.10', port: 8080 }, { clientIsn: 1000, serverIsn: 5000 });
const v6 = () => new TcpConversation({ address: '2001:db8::1', port: 40002 }, { address: '2001:db8::2', port: 8080 }, { clientIsn: 1000, serverIsn: 5000 });
const parse = (...records: Buffer[]) => parsePcap(Buffer.concat([PCAP_GLOBAL_HEADER, ...records]));

describe('checksum', () => {
  it('matches the RFC 1071 example and a known IPv4 header', () => {
    const rfc = Buffer.from('0001f203f4f5f6f7', 'hex');
    expect(onesSum(rfc)).toBe(0xddf2);
    expect(internetChecksum(rfc)).toBe(0x220d);
    expect(internetChecksum(Buffer.from('450000730000400040110000c0a80001c0a800c7', 'hex'))).toBe(0xb861);
  });

  it('pads an odd byte, folds carries, and chains over even-length pieces', () => {
    expect(onesSum(Buffer.from([0xab]))).toBe(0xab00);
    expect(onesSum(Buffer.alloc(0))).toBe(0);
    expect(fold(0x1fffe)).toBe(0xffff);
    expect(fold(0xffff_ffff_ff)).toBe(fold(0xffff + 0xffff + 0xff));
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), fc.uint8Array({ maxLength: 64 }), (a, b) => {
      const even = a.subarray(0, a.length & ~1);
      expect(onesSum(b, onesSum(even))).toBe(onesSum(Buffer.concat([even, b])));
    }));
  });
});

describe('addressBytes', () => {
  it('reads IPv4, IPv6 and writes IPv4-mapped IPv6 as IPv4', () => {
    expect([...addressBytes('192.0.2.10')]).toEqual([192, 0, 2, 10]);
    expect(addressBytes('2001:db8::1').toString('hex')).toBe('20010db8000000000000000000000001');
    expect(addressBytes('::').toString('hex')).toBe('0'.repeat(32));
    expect(addressBytes('fe80::1%eth0').toString('hex')).toBe('fe800000000000000000000000000001');
    expect(addressBytes('1:2:3:4:5:6:7:8').toString('hex')).toBe('00010002000300040005000600070008');
    expect(addressBytes('64:ff9b::192.0.2.1').toString('hex')).toBe('0064ff9b0000000000000000c0000201');
    expect([...addressBytes('::ffff:127.0.0.1')]).toEqual([127, 0, 0, 1]);
    expect([...addressBytes('::FFFF:7f00:1')]).toEqual([127, 0, 0, 1]);
    expect(() => addressBytes('localhost')).toThrow(/not an IP address/);
  });
});

describe('pcap records', () => {
  it('starts files with the classic microsecond Ethernet global header', () => {
    expect(PCAP_GLOBAL_HEADER.toString('hex')).toBe('d4c3b2a1020004000000000000000000' + '0000040001000000');
    expect(SNAPLEN).toBeGreaterThanOrEqual(16 + 14 + 40 + 20 + MAX_SEGMENT);
  });

  it('writes the IPv4 data header fields at their offsets', () => {
    const conv = v4();
    conv.handshake(0);
    const h = conv.dataHeader('client', 100, 1_700_000_000_123_456n, 0);
    expect(h.length).toBe(16 + 14 + 20 + 20);
    expect([h.readUInt32LE(0), h.readUInt32LE(4), h.readUInt32LE(8), h.readUInt32LE(12)]).toEqual([1_700_000_000, 123_456, 154, 154]);
    expect(h.subarray(16, 28).toString('hex')).toBe('020000000002' + '020000000001'); // to server, from client
    expect(h.readUInt16BE(28)).toBe(0x0800);
    expect([h[30], h.readUInt16BE(32), h.readUInt16BE(34), h.readUInt16BE(36), h[38], h[39]]).toEqual([0x45, 140, 3, 0x4000, 64, 6]);
    expect([...h.subarray(42, 50)]).toEqual([10, 1, 2, 3, 192, 0, 2, 10]);
    expect([h.readUInt16BE(50), h.readUInt16BE(52), h.readUInt32BE(54), h.readUInt32BE(58)]).toEqual([40001, 8080, 1001, 5001]);
    expect([h[62], h[63], h.readUInt16BE(64), h.readUInt16BE(68)]).toEqual([0x50, PSH | ACK, 65535, 0]);
    const [parsed] = parse(h, Buffer.alloc(100));
    expect(parsed.ipChecksumOk && parsed.tcpChecksumOk).toBe(true);
  });

  it('writes the IPv6 data header fields at their offsets', () => {
    const conv = v6();
    conv.handshake(0);
    const h = conv.dataHeader('server', 7, 1_700_000_000_654_321, 0);
    expect(h.length).toBe(16 + 14 + 40 + 20);
    expect([h.readUInt32LE(4), h.readUInt32LE(8), h.readUInt16BE(28)]).toEqual([654_321, 14 + 40 + 20 + 7, 0x86dd]);
    expect([h.readUInt32BE(30), h.readUInt16BE(34), h[36], h[37]]).toEqual([0x6000_0000, 27, 6, 64]);
    expect(h.subarray(38, 70).toString('hex')).toBe('20010db8000000000000000000000002' + '20010db8000000000000000000000001');
    expect([h.readUInt16BE(70), h.readUInt16BE(72), h.readUInt32BE(74), h.readUInt32BE(78), h[82], h[83]]).toEqual([8080, 40002, 5001, 1001, 0x50, PSH | ACK]);
    expect(parse(h, Buffer.alloc(7))[0].tcpChecksumOk).toBe(true);
  });

  it('handshakes with the MSS option and closes with FIN or RST', () => {
    const conv = v4();
    const records = parse(conv.handshake(0), conv.fin('client', 1), conv.reset('server', 2));
    expect(records.map((r) => [r.flags, r.seq, r.ack])).toEqual([
      [SYN, 1000, 0], [SYN | ACK, 5000, 1001], [ACK, 1001, 5001], [FIN | ACK, 1001, 5001], [ACK, 5001, 1002], [RST | ACK, 5001, 1002],
    ]);
    expect([records[0].tcp[12], records[0].tcp.subarray(20).toString('hex')]).toEqual([0x60, '0204ffd7']); // MSS 65495
    expect(records.every((r) => r.tcpChecksumOk && r.ipChecksumOk)).toBe(true);
  });

  it('gives the same bytes through dataHeader + payload as through data, and checksum 0 without a sum', () => {
    for (const make of [v4, v6]) {
      const [a, b, c] = [make(), make(), make()];
      for (const conv of [a, b, c]) conv.handshake(0);
      const payload = pseudoRandomBytes(MAX_SEGMENT, 7);
      const header = b.dataHeader('client', payload.length, 5, onesSum(payload));
      expect(Buffer.concat([header, payload]).equals(a.data('client', payload, 5))).toBe(true);
      const unchecked = c.dataHeader('client', payload.length, 5);
      const at = header.length - 4; // the TCP checksum is the third-last 16-bit field of the header
      expect(unchecked.readUInt16BE(at)).toBe(0);
      expect(header.readUInt16BE(at)).not.toBe(0);
      expect(Buffer.concat([unchecked.subarray(0, at), header.subarray(at, at + 2), unchecked.subarray(at + 2)]).equals(header)).toBe(true);
    }
  });

  it('cuts large payloads into MAX_SEGMENT segments, ACKed before the window fills', () => {
    const conv = v4();
    conv.handshake(0);
    const records = parse(conv.data('server', pseudoRandomBytes(200_000, 1), 1), conv.data('client', Buffer.alloc(0), 2));
    expect(records.map((r) => [r.flags, r.payload.length])).toEqual([
      [PSH | ACK, MAX_SEGMENT], [ACK, 0], [PSH | ACK, MAX_SEGMENT], [ACK, 0], [PSH | ACK, MAX_SEGMENT], [ACK, 0], [PSH | ACK, 3515],
    ]);
    expect(records.filter((r) => r.flags === ACK).map((r) => r.ack)).toEqual([1, 2, 3].map((n) => 5001 + n * MAX_SEGMENT));
  });

  it('keeps seq/ack consistent, checksums valid and data intact (any chunks, any ISNs)', () => {
    const isn = fc.oneof(fc.constantFrom(0, 0xffffffff, 0xffff_0000), fc.integer({ min: 0, max: 0xffffffff }));
    const size = fc.oneof(fc.constantFrom(0, 1, MAX_SEGMENT, MAX_SEGMENT + 1), fc.nat(140_000), fc.nat(100));
    const step = fc.record({ conv: fc.constant(0), from: fc.constantFrom('client' as const, 'server' as const), size });
    fc.assert(fc.property(isn, isn, fc.array(step, { maxLength: 12 }), fc.nat(), fc.boolean(), (clientIsn, serverIsn, steps, seed, ipv6) => {
      const conv = new TcpConversation({ address: ipv6 ? '::1' : '127.0.0.1', port: 1 }, { address: ipv6 ? '::2' : '127.0.0.2', port: 2 }, { clientIsn, serverIsn });
      const { file, sent } = record([conv], steps, seed);
      const records = parsePcap(file);
      const next = { client: (clientIsn + 1) >>> 0, server: (serverIsn + 1) >>> 0 };
      const acked = { ...next };
      const got = { client: [] as Buffer[], server: [] as Buffer[] };
      for (const r of records.slice(3)) {
        const [from, to] = r.sport === 1 ? (['client', 'server'] as const) : (['server', 'client'] as const);
        expect(r.tcpChecksumOk && r.ipChecksumOk && r.ipv4 === !ipv6).toBe(true);
        expect(r.inclLen === r.origLen && r.inclLen <= SNAPLEN && r.payload.length <= MAX_SEGMENT).toBe(true);
        expect(r.seq).toBe(next[from]);
        expect(r.ack).toBe(next[to]);
        acked[to] = r.ack;
        next[from] = (next[from] + r.payload.length + (r.flags & FIN)) >>> 0;
        expect((next[from] - acked[from]) >>> 0).toBeLessThan(65535);
        got[from].push(r.payload);
      }
      expect(Buffer.concat(got.client).equals(sent[0].client) && Buffer.concat(got.server).equals(sent[0].server)).toBe(true);
    }), { numRuns: 40 });
  });

  it('converts number and bigint microsecond timestamps', () => {
    const conv = v4();
    const [syn] = parse(conv.handshake(1_700_000_000_000_001));
    expect([syn.tsSec, syn.tsUsec]).toEqual([1_700_000_000, 1]);
    const now = Number(timestampNow() / 1000n);
    expect(Math.abs(now - Date.now())).toBeLessThan(5000);
  });

  it('refuses what a TCP connection cannot do', () => {
    const conv = v4();
    expect(() => conv.data('client', Buffer.from('x'), 0)).toThrow(ConversationStateError);
    conv.handshake(0);
    expect(() => conv.handshake(0)).toThrow(/already/);
    for (const bad of [0, MAX_SEGMENT + 1, 1.5]) expect(() => conv.dataHeader('client', bad, 0)).toThrow(RangeError);
    expect(() => conv.dataHeader('client', 1, 0, 0x10000)).toThrow(RangeError);
    for (const bad of [-1, 1.5, 2 ** 32 * 1e6]) expect(() => conv.fin('client', bad)).toThrow(RangeError);
    conv.fin('client', 0);
    expect(() => conv.data('client', Buffer.from('x'), 0)).toThrow(/client already sent FIN/);
    expect(conv.data('server', Buffer.from('x'), 0).length).toBeGreaterThan(1);
    conv.reset('server', 0);
    expect(() => conv.data('server', Buffer.from('x'), 0)).toThrow(/reset/);
    expect(() => conv.reset('client', 0)).toThrow(ConversationStateError);
  });

  it('checks endpoints: one IP family, valid ports', () => {
    expect(() => new TcpConversation({ address: '10.0.0.1', port: 1 }, { address: '::1', port: 2 })).toThrow(/same IP family/);
    expect(() => new TcpConversation({ address: '10.0.0.1', port: 70000 }, { address: '10.0.0.2', port: 2 })).toThrow(RangeError);
    expect(new TcpConversation({ address: '::ffff:10.0.0.1', port: 1 }, { address: '10.0.0.2', port: 2 }).ipv4).toBe(true);
  });
});
