// yamux frames (HashiCorp's spec.md): pure encoding and an incremental parser, no I/O.
//
//   0        1        2                 4                                  8                                 12
//   +--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+
//   |version |  type  |      flags      |             stream id             |              length               |
//   +--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+
//
// All fields big-endian. `length` is the payload size of a Data frame, the window increment of a
// WindowUpdate, the opaque value of a Ping and the error code of a GoAway; only Data carries a
// payload.

export const HEADER_SIZE = 12;
export const PROTOCOL_VERSION = 0;

export const FRAME_TYPE = { DATA: 0, WINDOW_UPDATE: 1, PING: 2, GO_AWAY: 3 } as const;
export type FrameType = (typeof FRAME_TYPE)[keyof typeof FRAME_TYPE];

export const FLAG = { SYN: 1, ACK: 2, FIN: 4, RST: 8 } as const;

export const GO_AWAY_CODE = { NORMAL: 0, PROTOCOL_ERROR: 1, INTERNAL_ERROR: 2 } as const;

/** The window every stream starts with, on both sides, before any WindowUpdate. */
export const INITIAL_WINDOW = 256 * 1024;

export interface FrameHeader {
  version: number;
  type: FrameType;
  flags: number;
  streamId: number;
  length: number;
}

export type FrameErrorCode = 'ERR_MUX_BAD_VERSION' | 'ERR_MUX_BAD_TYPE' | 'ERR_MUX_FRAME_TOO_LARGE' | 'ERR_MUX_BAD_STREAM_ID';

export interface FrameError {
  error: FrameErrorCode;
  message: string;
}

/** The 12 header bytes of a frame. */
export function encodeHeader(type: FrameType, flags: number, streamId: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(HEADER_SIZE);
  writeHeader(b, 0, type, flags, streamId, length);
  return b;
}

export function writeHeader(b: Buffer, offset: number, type: FrameType, flags: number, streamId: number, length: number): void {
  b[offset] = PROTOCOL_VERSION;
  b[offset + 1] = type;
  b.writeUInt16BE(flags, offset + 2);
  b.writeUInt32BE(streamId, offset + 4);
  b.writeUInt32BE(length, offset + 8);
}

/**
 * Reads and checks the header at `offset` (the caller guarantees 12 bytes there). A bad version,
 * an unknown type, a Data frame longer than `maxDataLength`, a stream frame on stream 0 or a
 * session frame (Ping, GoAway) on a stream are protocol errors: no peer that follows the spec
 * sends them, and none of them can be skipped safely.
 */
export function decodeHeader(b: Buffer, offset: number, maxDataLength: number): FrameHeader | FrameError {
  const version = b[offset];
  const type = b[offset + 1];
  const flags = b.readUInt16BE(offset + 2);
  const streamId = b.readUInt32BE(offset + 4);
  const length = b.readUInt32BE(offset + 8);
  if (version !== PROTOCOL_VERSION) return { error: 'ERR_MUX_BAD_VERSION', message: `unsupported yamux version ${version}` };
  if (type > FRAME_TYPE.GO_AWAY) return { error: 'ERR_MUX_BAD_TYPE', message: `unknown yamux frame type ${type}` };
  if (type === FRAME_TYPE.DATA && length > maxDataLength) {
    return { error: 'ERR_MUX_FRAME_TOO_LARGE', message: `data frame of ${length} bytes exceeds the largest window (${maxDataLength})` };
  }
  const sessionFrame = type === FRAME_TYPE.PING || type === FRAME_TYPE.GO_AWAY;
  if (sessionFrame !== (streamId === 0)) {
    return { error: 'ERR_MUX_BAD_STREAM_ID', message: `${FRAME_TYPE_NAME[type]} frame on stream ${streamId}` };
  }
  return { version, type: type as FrameType, flags, streamId, length };
}

export const FRAME_TYPE_NAME: Record<number, string> = { 0: 'data', 1: 'window update', 2: 'ping', 3: 'go away' };

export function isFrameError(x: FrameHeader | FrameError): x is FrameError {
  return 'error' in x;
}

/** What a FrameParser hands its frames to. */
export interface FrameSink {
  /** Every frame's header, in order; for a Data frame, before any of its payload. */
  onHeader(header: FrameHeader): void;
  /** A piece of the current Data frame's payload: a view of the pushed chunk, never a copy. */
  onPayload(header: FrameHeader, piece: Buffer): void;
  /** After a Data frame's last payload byte (right after onHeader for an empty one). */
  onDataEnd(header: FrameHeader): void;
}

/**
 * Incremental parser over the bytes of a connection, in any split: a header split across chunks
 * is assembled in a 12-byte buffer; payloads are handed on as views of the chunks they arrived
 * in. After a protocol error it stays failed and parses nothing more.
 */
export class FrameParser {
  private readonly headerBuf = Buffer.alloc(HEADER_SIZE);
  private headerHave = 0;
  private current: FrameHeader | undefined;
  private payloadLeft = 0;
  private failure: FrameError | undefined;

  constructor(private readonly maxDataLength: number) {}

  get failed(): FrameError | undefined {
    return this.failure;
  }

  /**
   * Parses `chunk`, calling `sink` for what it completes. Returns the protocol error that stopped
   * it, if any. A sink may throw to stop parsing; the parser's state is consistent up to the call.
   */
  push(chunk: Buffer, sink: FrameSink): FrameError | undefined {
    if (this.failure) return this.failure;
    let at = 0;
    const end = chunk.length;
    while (at < end) {
      const current = this.current;
      if (current) {
        const take = Math.min(this.payloadLeft, end - at);
        this.payloadLeft -= take;
        const piece = at === 0 && take === end ? chunk : chunk.subarray(at, at + take);
        at += take;
        if (this.payloadLeft === 0) this.current = undefined;
        sink.onPayload(current, piece);
        if (this.payloadLeft === 0) sink.onDataEnd(current);
        continue;
      }
      let header: FrameHeader | FrameError;
      if (this.headerHave === 0 && end - at >= HEADER_SIZE) {
        header = decodeHeader(chunk, at, this.maxDataLength);
        at += HEADER_SIZE;
      } else {
        const take = Math.min(HEADER_SIZE - this.headerHave, end - at);
        chunk.copy(this.headerBuf, this.headerHave, at, at + take);
        this.headerHave += take;
        at += take;
        if (this.headerHave < HEADER_SIZE) break;
        this.headerHave = 0;
        header = decodeHeader(this.headerBuf, 0, this.maxDataLength);
      }
      if (isFrameError(header)) {
        this.failure = header;
        return header;
      }
      if (header.type === FRAME_TYPE.DATA && header.length > 0) {
        this.current = header;
        this.payloadLeft = header.length;
        sink.onHeader(header);
      } else {
        sink.onHeader(header);
        if (header.type === FRAME_TYPE.DATA) sink.onDataEnd(header);
      }
    }
    return undefined;
  }
}
