// Classic pcap recording of relayed TCP streams. The relay sees byte streams, not packets, so
// this synthesizes what a capture of them would have shown: Ethernet + IPv4/IPv6 + TCP headers
// with the real addresses and ports, a handshake, seq/ack numbers that follow the data, and
// FIN/RST at the end. tshark and Wireshark then open a recording as ordinary TCP conversations.
//
// Pure: nothing here does I/O. A file is PCAP_GLOBAL_HEADER followed by the records returned
// by the TcpConversation methods, in timestamp order.
//
// Header and payload are separable (dataHeader) so that a native path can write the header
// and splice the payload into the file without it entering user space. That path may not
// know the payload's checksum; the TCP checksum is then left 0. Wireshark and tshark do
// not validate TCP checksums unless asked to (tcp.check_checksum), so such files still open
// as clean conversations. The splice engine does exactly that, in C++ (native/pcap_record.cc
// ports segment() and dataHeader()); a conversation crosses between the two as its state():
// JS writes the handshake, the engine records the spliced bytes, and JS takes the state back
// when a pair is released to user space.
import { randomBytes } from 'node:crypto';
import { fold, internetChecksum, onesSum } from './checksum.js';
import { addressBytes } from '../net/ip.js';

/** Larger than any record written here (the largest IPv6 frame is 65,569 bytes). */
export const SNAPLEN = 262_144;

/**
 * Largest TCP payload per segment: an IPv4 total length is 16 bits (65535 - 20 IP - 20 TCP).
 * Used for IPv6 too (its 16-bit payload length would allow 20 more) so that both legs of a
 * relay are cut at the same points. It is also the MSS advertised on the SYNs, so Wireshark
 * sees no segment larger than agreed.
 */
export const MAX_SEGMENT = 65_495;

/** Window advertised by both sides; no window scaling, so it is also the most bytes in flight. */
const WINDOW = 65_535;

/** Microsecond timestamps, magic a1b2c3d4, version 2.4, link type 1 (Ethernet). Little-endian. */
export const PCAP_GLOBAL_HEADER: Buffer = (() => {
  const header = Buffer.alloc(24);
  header.writeUInt32LE(0xa1b2c3d4, 0);
  header.writeUInt16LE(2, 4);
  header.writeUInt16LE(4, 6);
  // thiszone (8) and sigfigs (12) stay 0
  header.writeUInt32LE(SNAPLEN, 16);
  header.writeUInt32LE(1, 20);
  return header;
})();

/** An IPv4 or IPv6 address and port, as in socket.remoteAddress / remotePort. IPv4-mapped IPv6 is written as IPv4. */
export interface Endpoint {
  address: string;
  port: number;
}

export type Side = 'client' | 'server';

/** Microseconds since the Unix epoch (an integer). */
export type Timestamp = bigint | number;

/** The current time as a Timestamp. */
export function timestampNow(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
}

export const TCP_FLAGS = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;
const { FIN, SYN, RST, PSH, ACK } = TCP_FLAGS;

/** What one side has sent, in TCP sequence space (all numbers are uint32 and wrap), and its addresses as bytes. */
interface HalfState extends ConversationHalfState {
  readonly mac: Buffer;
  readonly address: string;
  readonly ip: Buffer;
  readonly port: number;
}

const MACS = { client: Buffer.from([2, 0, 0, 0, 0, 1]), server: Buffer.from([2, 0, 0, 0, 0, 2]) };
const other = (side: Side): Side => (side === 'client' ? 'server' : 'client');

export class ConversationStateError extends Error {
  readonly code = 'ERR_PCAP_CONVERSATION_STATE';
}

/** One side of a conversation as plain data. Numbers are TCP sequence space (uint32, wrapping). */
export interface ConversationHalfState {
  /** As given to the constructor (an IPv4-mapped IPv6 address stays as it was given). */
  address: string;
  port: number;
  /** Sequence number of the next byte (or FIN) this side sends. */
  next: number;
  /** Highest acknowledgment the other side has sent for this side's data. */
  acked: number;
  /** IPv4 identification of this side's next packet (uint16). */
  ipId: number;
  /** This side sent its FIN. */
  finished: boolean;
}

/**
 * A TcpConversation as a plain, serializable object (structuredClone, JSON): what passes
 * between JS and the native recorder. `phase` is `new` before handshake(), `closed` after reset().
 */
export interface ConversationState {
  ipv4: boolean;
  phase: 'new' | 'open' | 'closed';
  client: ConversationHalfState;
  server: ConversationHalfState;
}

/**
 * One TCP connection as seen on the wire. Each method returns complete pcap records (a header
 * from dataHeader is complete once its payload follows) and advances the sequence numbers.
 */
export class TcpConversation {
  readonly ipv4: boolean;
  private readonly half: Record<Side, HalfState>;
  /** Sum of the pseudo-header's addresses and protocol: the same in both directions. */
  private readonly pseudoSum: number;
  private phase: ConversationState['phase'] = 'new';

  constructor(client: Endpoint, server: Endpoint, options: { clientIsn?: number; serverIsn?: number } = {}) {
    const clientIp = addressBytes(client.address);
    const serverIp = addressBytes(server.address);
    if (clientIp.length !== serverIp.length) {
      throw new TypeError(`${client.address} and ${server.address} are not of the same IP family`);
    }
    const half = (side: Side, ip: Buffer, end: Endpoint, isn: number | undefined): HalfState => {
      if (!Number.isInteger(end.port) || end.port < 0 || end.port > 0xffff) throw new RangeError(`bad port ${end.port}`);
      // tshark marks the handshake's ACK as a duplicate when its ack number wraps to exactly 0,
      // so a chosen ISN is never 0xffffffff.
      const first = isn ?? randomBytes(4).readUInt32BE(0) % 0xffffffff;
      if (!Number.isInteger(first) || first < 0 || first > 0xffffffff) throw new RangeError(`bad ISN ${isn}`);
      return { mac: MACS[side], address: end.address, ip, port: end.port, next: first, acked: first, ipId: 1, finished: false };
    };
    this.ipv4 = clientIp.length === 4;
    this.half = { client: half('client', clientIp, client, options.clientIsn), server: half('server', serverIp, server, options.serverIsn) };
    this.pseudoSum = onesSum(serverIp, onesSum(clientIp)) + 6;
  }

  /** A conversation that goes on from `state` (see state()). Throws on a state that cannot be one. */
  static fromState(state: ConversationState): TcpConversation {
    if (!['new', 'open', 'closed'].includes(state?.phase)) throw new TypeError(`bad conversation phase ${String(state?.phase)}`);
    const conv = new TcpConversation(state.client, state.server, { clientIsn: state.client.next, serverIsn: state.server.next });
    if (conv.ipv4 !== state.ipv4) throw new TypeError(`ipv4 is ${state.ipv4} but the addresses are ${conv.ipv4 ? 'IPv4' : 'IPv6'}`);
    for (const side of ['client', 'server'] as const) {
      const from = state[side];
      for (const key of ['next', 'acked'] as const) {
        if (!Number.isInteger(from[key]) || from[key] < 0 || from[key] > 0xffffffff) throw new RangeError(`bad ${side}.${key} ${from[key]}`);
      }
      if (!Number.isInteger(from.ipId) || from.ipId < 0 || from.ipId > 0xffff) throw new RangeError(`bad ${side}.ipId ${from.ipId}`);
      Object.assign(conv.half[side], { next: from.next, acked: from.acked, ipId: from.ipId, finished: from.finished === true });
    }
    conv.phase = state.phase;
    return conv;
  }

  /** Where the conversation stands, as plain data: `TcpConversation.fromState(c.state())` goes on where c is. */
  state(): ConversationState {
    const half = (side: Side): ConversationHalfState => {
      const { address, port, next, acked, ipId, finished } = this.half[side];
      return { address, port, next, acked, ipId, finished };
    };
    return { ipv4: this.ipv4, phase: this.phase, client: half('client'), server: half('server') };
  }

  /** SYN, SYN/ACK and ACK. */
  handshake(timestampUs: Timestamp): Buffer {
    if (this.phase !== 'new') throw new ConversationStateError('handshake() was already called');
    const ts = microseconds(timestampUs);
    this.phase = 'open';
    const syn = this.segment('client', SYN, 0, ts, 0);
    const synAck = this.segment('server', SYN | ACK, 0, ts, 0);
    return Buffer.concat([syn, synAck, this.segment('client', ACK, 0, ts, 0)]);
  }

  /** `payload` from one side, cut into segments of at most MAX_SEGMENT bytes. Empty payload: no records. */
  data(from: Side, payload: Uint8Array, timestampUs: Timestamp): Buffer {
    this.checkCanSend(from);
    const parts: Uint8Array[] = [];
    for (let offset = 0; offset < payload.length; offset += MAX_SEGMENT) {
      const chunk = payload.subarray(offset, offset + MAX_SEGMENT);
      parts.push(this.dataHeader(from, chunk.length, timestampUs, onesSum(chunk)), chunk);
    }
    return Buffer.concat(parts);
  }

  /**
   * The bytes to write before a payload of `payloadLength` (1..MAX_SEGMENT) bytes: the pcap
   * record header and the Ethernet, IP and TCP headers of one PSH/ACK segment, preceded by a
   * pure ACK record from the other side when the unacknowledged data would otherwise reach the
   * edge of the window: no real sender goes past it, and Wireshark flags a segment ending
   * exactly on it as "TCP Window Full". (The relay's sockets did ACK; we just never saw when.)
   *
   * `payloadSum` is `onesSum(payload)`; without it the TCP checksum is left 0 (see top of file).
   */
  dataHeader(from: Side, payloadLength: number, timestampUs: Timestamp, payloadSum?: number): Buffer {
    this.checkCanSend(from);
    if (!Number.isInteger(payloadLength) || payloadLength < 1 || payloadLength > MAX_SEGMENT) {
      throw new RangeError(`payload length ${payloadLength} is not in 1..${MAX_SEGMENT}`);
    }
    if (payloadSum !== undefined && (!Number.isInteger(payloadSum) || payloadSum < 0 || payloadSum > 0xffff)) {
      throw new RangeError(`payload sum ${payloadSum} is not a 16-bit one's complement sum`);
    }
    const ts = microseconds(timestampUs);
    const sender = this.half[from];
    const inFlight = (sender.next - sender.acked) >>> 0;
    const ackFirst = inFlight > 0 && inFlight + payloadLength >= WINDOW;
    const ack = ackFirst ? [this.segment(other(from), ACK, 0, ts, 0)] : [];
    return Buffer.concat([...ack, this.segment(from, PSH | ACK, payloadLength, ts, payloadSum)]);
  }

  /** FIN/ACK from `from`, and the other side's ACK of it. `from` may send nothing after this. */
  fin(from: Side, timestampUs: Timestamp): Buffer {
    this.checkCanSend(from);
    const ts = microseconds(timestampUs);
    const finRecord = this.segment(from, FIN | ACK, 0, ts, 0);
    this.half[from].finished = true;
    return Buffer.concat([finRecord, this.segment(other(from), ACK, 0, ts, 0)]);
  }

  /** RST/ACK from `from`; the conversation is over. */
  reset(from: Side, timestampUs: Timestamp): Buffer {
    if (this.phase !== 'open') throw new ConversationStateError(`reset() on a ${this.phase} conversation`);
    const ts = microseconds(timestampUs);
    const record = this.segment(from, RST | ACK, 0, ts, 0);
    this.phase = 'closed';
    return record;
  }

  private checkCanSend(from: Side): void {
    if (this.phase !== 'open') throw new ConversationStateError(this.phase === 'new' ? 'handshake() first' : 'the conversation was reset');
    if (this.half[from].finished) throw new ConversationStateError(`the ${from} already sent FIN`);
  }

  /** One record's headers; advances `from`'s sequence number past the payload (and SYN/FIN). */
  private segment(from: Side, flags: number, payloadLength: number, ts: bigint, payloadSum: number | undefined): Buffer {
    const src = this.half[from];
    const dst = this.half[other(from)];
    const ipLength = this.ipv4 ? 20 : 40;
    const tcpLength = flags & SYN ? 24 : 20; // SYNs carry the MSS option
    const frameLength = 14 + ipLength + tcpLength + payloadLength;
    const record = Buffer.alloc(16 + frameLength - payloadLength);

    record.writeUInt32LE(Number(ts / 1_000_000n), 0);
    record.writeUInt32LE(Number(ts % 1_000_000n), 4);
    record.writeUInt32LE(frameLength, 8); // captured
    record.writeUInt32LE(frameLength, 12); // on the wire

    dst.mac.copy(record, 16);
    src.mac.copy(record, 22);
    record.writeUInt16BE(this.ipv4 ? 0x0800 : 0x86dd, 28);

    const ip = 30;
    if (this.ipv4) {
      record[ip] = 0x45; // version 4, 5 words
      record.writeUInt16BE(ipLength + tcpLength + payloadLength, ip + 2);
      record.writeUInt16BE(src.ipId, ip + 4);
      src.ipId = (src.ipId + 1) & 0xffff;
      record.writeUInt16BE(0x4000, ip + 6); // DF, as Linux sets it on TCP
      record[ip + 8] = 64; // TTL
      record[ip + 9] = 6; // TCP
      src.ip.copy(record, ip + 12);
      dst.ip.copy(record, ip + 16);
      record.writeUInt16BE(internetChecksum(record.subarray(ip, ip + 20)), ip + 10);
    } else {
      record.writeUInt32BE(0x6000_0000, ip); // version 6, traffic class 0, flow label 0
      record.writeUInt16BE(tcpLength + payloadLength, ip + 4);
      record[ip + 6] = 6; // TCP
      record[ip + 7] = 64; // hop limit
      src.ip.copy(record, ip + 8);
      dst.ip.copy(record, ip + 24);
    }

    const tcp = ip + ipLength;
    record.writeUInt16BE(src.port, tcp);
    record.writeUInt16BE(dst.port, tcp + 2);
    record.writeUInt32BE(src.next, tcp + 4);
    if (flags & ACK) {
      record.writeUInt32BE(dst.next, tcp + 8);
      dst.acked = dst.next;
    }
    record[tcp + 12] = (tcpLength / 4) << 4;
    record[tcp + 13] = flags;
    record.writeUInt16BE(WINDOW, tcp + 14);
    if (flags & SYN) record.writeUInt32BE(0x0204_0000 | MAX_SEGMENT, tcp + 20); // kind 2, length 4
    if (payloadSum !== undefined) {
      // The pseudo-header's length is 32 bits for IPv6, 16 for IPv4; either way it adds as one number.
      const sum = this.pseudoSum + tcpLength + payloadLength + payloadSum;
      record.writeUInt16BE(internetChecksum(record.subarray(tcp), fold(sum)), tcp + 16);
    }

    src.next = (src.next + payloadLength + (flags & (SYN | FIN) ? 1 : 0)) >>> 0;
    return record;
  }
}

function microseconds(timestamp: Timestamp): bigint {
  const us = BigInt(timestamp); // throws on a fractional number
  if (us < 0n || us / 1_000_000n > 0xffffffffn) throw new RangeError(`timestamp ${timestamp} µs is out of the pcap range`);
  return us;
}
