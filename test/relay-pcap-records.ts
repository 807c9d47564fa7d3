// pcap recordings in memory: a minimal reader (with its own checksum arithmetic, so it does
// not trust src/pcap/checksum.ts) and scenario recording. No process, no socket: the unit tests use it.
import { MAX_SEGMENT, PCAP_GLOBAL_HEADER, TcpConversation, type Side } from '../src/pcap/tcp-conversation.js';

export interface ParsedRecord {
  tsSec: number;
  tsUsec: number;
  inclLen: number;
  origLen: number;
  ipv4: boolean;
  ip: Buffer;
  tcp: Buffer;
  payload: Buffer;
  seq: number;
  ack: number;
  flags: number;
  sport: number;
  dport: number;
  /** TCP checksum verified over pseudo-header + header + payload. */
  tcpChecksumOk: boolean;
  /** IPv4 header checksum verified; true for IPv6, which has none. */
  ipChecksumOk: boolean;
}

function naiveSum(...parts: Buffer[]): number {
  const all = Buffer.concat(parts);
  let sum = 0;
  for (let i = 0; i < all.length; i += 2) sum += all[i] * 256 + (all[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 65536);
  return sum;
}

export function parsePcap(file: Buffer): ParsedRecord[] {
  if (!file.subarray(0, 24).equals(PCAP_GLOBAL_HEADER)) throw new Error('not our global header');
  const records: ParsedRecord[] = [];
  for (let at = 24; at < file.length; ) {
    const inclLen = file.readUInt32LE(at + 8);
    const frame = file.subarray(at + 16, at + 16 + inclLen);
    if (frame.length !== inclLen) throw new Error(`record at ${at} is truncated`);
    const ipv4 = frame.readUInt16BE(12) === 0x0800;
    const ipLength = ipv4 ? (frame[14] & 0x0f) * 4 : 40;
    const ip = frame.subarray(14, 14 + ipLength);
    const segment = frame.subarray(14 + ipLength);
    const tcp = segment.subarray(0, (segment[12] >> 4) * 4);
    const length = Buffer.alloc(4);
    length.writeUInt32BE(segment.length);
    const pseudo = ipv4
      ? Buffer.concat([ip.subarray(12, 20), Buffer.from([0, 6]), length.subarray(2)])
      : Buffer.concat([ip.subarray(8, 40), length, Buffer.from([0, 0, 0, 6])]);
    records.push({
      tsSec: file.readUInt32LE(at),
      tsUsec: file.readUInt32LE(at + 4),
      inclLen,
      origLen: file.readUInt32LE(at + 12),
      ipv4,
      ip,
      tcp,
      payload: segment.subarray(tcp.length),
      sport: tcp.readUInt16BE(0),
      dport: tcp.readUInt16BE(2),
      seq: tcp.readUInt32BE(4),
      ack: tcp.readUInt32BE(8),
      flags: tcp[13],
      tcpChecksumOk: naiveSum(pseudo, segment) === 0xffff,
      ipChecksumOk: ipv4 ? naiveSum(ip) === 0xffff : true,
    });
    at += 16 + inclLen;
  }
  return records;
}

/** Deterministic bytes (xorshift32), so a failing fast-check seed reproduces the same payloads. */
export function pseudoRandomBytes(size: number, seed: number): Buffer {
  const bytes = Buffer.alloc(size);
  let x = seed | 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
  }
  return bytes;
}

export interface Step {
  conv: number;
  from: Side;
  size: number;
}

export interface Recording {
  file: Buffer;
  /** What each conversation's client and server sent, concatenated. */
  sent: { client: Buffer; server: Buffer }[];
}

/**
 * Handshakes every conversation, plays `steps` with increasing timestamps, then closes each:
 * even-numbered conversations with FIN both ways, odd ones with a RST from the server.
 * `headerOnly` writes data through dataHeader without a payload sum (TCP checksum 0).
 */
export function record(convs: TcpConversation[], steps: Step[], seed: number, headerOnly = false): Recording {
  let ts = 1_700_000_000_000_000n;
  const parts: Buffer[] = [PCAP_GLOBAL_HEADER];
  const sent = convs.map(() => ({ client: [] as Buffer[], server: [] as Buffer[] }));
  for (const conv of convs) parts.push(conv.handshake((ts += 1000n)));
  steps.forEach((step, i) => {
    const payload = pseudoRandomBytes(step.size, seed + i);
    sent[step.conv][step.from].push(payload);
    const conv = convs[step.conv];
    ts += 137n;
    if (!headerOnly) return parts.push(conv.data(step.from, payload, ts));
    for (let at = 0; at < payload.length; at += MAX_SEGMENT) {
      const chunk = payload.subarray(at, at + MAX_SEGMENT);
      parts.push(conv.dataHeader(step.from, chunk.length, ts), chunk);
    }
  });
  convs.forEach((conv, i) => {
    if (i % 2 === 1) return parts.push(conv.reset('server', (ts += 10n)));
    parts.push(conv.fin('client', (ts += 10n)), conv.fin('server', (ts += 10n)));
  });
  return { file: Buffer.concat(parts), sent: sent.map((s) => ({ client: Buffer.concat(s.client), server: Buffer.concat(s.server) })) };
}
