// Recordings read back by tshark: the TCP streams it reassembles must be exactly what was sent,
// with valid checksums and nothing its TCP analysis objects to.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MAX_SEGMENT, TcpConversation, type Endpoint } from '../src/pcap/tcp-conversation.js';
import { needsTool } from './policy.js';
import { parseFollow, parsePcap, record, tshark, type Recording, type Step } from './relay-pcap-helpers.js';


const ENDPOINTS: [Endpoint, Endpoint][] = [
  [{ address: '::ffff:10.1.2.3', port: 40001 }, { address: '192.0.2.10', port: 9001 }], // written as IPv4
  [{ address: '2001:db8::1', port: 40002 }, { address: '2001:db8::2', port: 9002 }],
];
const shown = ({ address, port }: Endpoint, brackets: boolean) => {
  const host = address.replace(/^::ffff:/, '');
  return brackets && host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
};

describe('read back with tshark', () => {
  let dir: string;
  let count = 0;
  beforeEach((ctx) => needsTool(ctx, 'tshark'));
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splicer-pcap-'));
  });
  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  function write(recording: Recording): string {
    const file = path.join(dir, `${++count}.pcap`);
    fs.writeFileSync(file, recording.file);
    return file;
  }

  /** Both conversations' streams, as tshark follows them, equal what was sent; the conv table shows them. */
  function expectStreams(file: string, recording: Recording): void {
    const output = tshark(['-r', file, '-q', '-z', 'follow,tcp,raw,0', '-z', 'follow,tcp,raw,1', '-z', 'conv,tcp']);
    const streams = parseFollow(output);
    expect(streams).toHaveLength(2);
    ENDPOINTS.forEach(([client, server], i) => {
      const stream = streams.find((s) => s.node0 === shown(client, true));
      expect(stream?.node1).toBe(shown(server, true));
      // Not toEqual: a diff of megabytes helps no one. Lengths first, for a readable failure.
      expect([stream!.client.length, stream!.server.length]).toEqual([recording.sent[i].client.length, recording.sent[i].server.length]);
      expect(stream!.client.equals(recording.sent[i].client) && stream!.server.equals(recording.sent[i].server)).toBe(true);
      expect(output).toMatch(new RegExp(`^${regexEscape(shown(client, false))}\\s+<->\\s+${regexEscape(shown(server, false))}\\s`, 'm'));
    });
  }

  /** `tcp.analysis.flags` marks retransmissions, lost segments, window full, dup ACKs... none may appear. */
  function expectNoAnalysisFlags(file: string): void {
    expect(tshark(['-r', file, '-Y', 'tcp.analysis.flags'])).toBe('');
  }

  /** Checksum status per record, with validation on: "ip tcp", where 0 = bad, 1 = good, "" = none (IPv6). */
  function checksumStatuses(file: string, validate: boolean): string[] {
    const prefs = validate ? ['-o', 'tcp.check_checksum:TRUE', '-o', 'ip.check_checksum:TRUE'] : [];
    const output = tshark(['-r', file, ...prefs, '-T', 'fields', '-E', 'separator=/s', '-e', 'ip.checksum.status', '-e', 'tcp.checksum.status']);
    return output.trimEnd().split('\n');
  }

  const sizes = [0, 1, 1000, MAX_SEGMENT, MAX_SEGMENT + 1, 65_536, 200_000, 3];

  it('two conversations (IPv4 and IPv6), chunks both ways of every awkward size: > 64 KiB, MAX_SEGMENT ± 1, 0 bytes', () => {
    const convs = ENDPOINTS.map(([client, server]) => new TcpConversation(client, server));
    // 40 + MAX_SEGMENT unacknowledged bytes reach exactly the edge of the 65535-byte window,
    // which tshark flags as "window full" unless the receiver ACKed in between.
    const edge: Step[] = [{ conv: 0, from: 'client', size: 40 }, { conv: 0, from: 'client', size: MAX_SEGMENT }];
    const steps: Step[] = edge.concat(sizes.flatMap((size, i) => [
      { conv: i % 2, from: 'client' as const, size },
      { conv: (i + 1) % 2, from: 'server' as const, size: sizes[sizes.length - 1 - i] },
      { conv: i % 2, from: 'server' as const, size: (i * 37_813) % 100_000 },
    ]));
    const recording = record(convs, steps, 20_240_601);
    const file = write(recording);
    expectStreams(file, recording);
    expectNoAnalysisFlags(file);
    const statuses = checksumStatuses(file, true);
    expect(statuses).toHaveLength(parsePcap(recording.file).length);
    for (const line of statuses) expect(['1 1', ' 1']).toContain(line);
    // The same filter a user would type finds nothing.
    expect(tshark(['-r', file, '-o', 'tcp.check_checksum:TRUE', '-o', 'ip.check_checksum:TRUE', '-Y', 'tcp.checksum.status == 0 || ip.checksum.status == 0'])).toBe('');
  });

  it('holds for random conversations (fast-check, ISNs near the wrap included)', () => {
    // 0xffffffff is left out: tshark flags the handshake ACK as a duplicate when its ack wraps to exactly 0
    // (the writer never picks that ISN itself).
    const isn = fc.oneof(fc.constant(0xffff_fff0), fc.integer({ min: 0, max: 0xfffffffe }));
    const step = fc.record({
      conv: fc.nat(1),
      from: fc.constantFrom('client' as const, 'server' as const),
      size: fc.oneof(fc.constantFrom(...sizes), fc.nat(150_000)),
    });
    fc.assert(fc.property(fc.array(isn, { minLength: 4, maxLength: 4 }), fc.array(step, { maxLength: 16 }), fc.nat(), (isns, steps, seed) => {
      const convs = ENDPOINTS.map(([client, server], i) => new TcpConversation(client, server, { clientIsn: isns[2 * i], serverIsn: isns[2 * i + 1] }));
      const recording = record(convs, steps, seed);
      const file = write(recording);
      expectStreams(file, recording);
      expectNoAnalysisFlags(file);
      expect(checksumStatuses(file, true).every((line) => line === '1 1' || line === ' 1')).toBe(true);
    }), { numRuns: 4 });
  });

  it('header-only records (TCP checksum 0) are clean conversations unless checksum validation is turned on', () => {
    const convs = ENDPOINTS.map(([client, server]) => new TcpConversation(client, server));
    const steps: Step[] = sizes.flatMap((size, i) => [{ conv: i % 2, from: 'client' as const, size }, { conv: 1 - (i % 2), from: 'server' as const, size }]);
    const recording = record(convs, steps, 42, true);
    const file = write(recording);
    expectStreams(file, recording);
    expectNoAnalysisFlags(file);
    // By default tshark does not check TCP checksums (2 = unverified); IPv4 header checksums are always real.
    for (const line of checksumStatuses(file, false)) expect(['2 2', ' 2']).toContain(line);
    const records = parsePcap(recording.file);
    checksumStatuses(file, true).forEach((line, i) => {
      const ip = records[i].ipv4 ? '1' : '';
      expect(line).toBe(`${ip} ${records[i].payload.length > 0 ? 0 : 1}`);
    });
  });
});

function regexEscape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
