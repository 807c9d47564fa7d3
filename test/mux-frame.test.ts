// yamux frames without sockets: headers byte for byte against the spec, frames whole, byte by byte
// and coalesced, payloads handed on as views (no copy), protocol errors, and fast-check: any frames
// in any split parse back to themselves; any bytes never throw.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeHeader,
  encodeHeader,
  FLAG,
  FRAME_TYPE,
  FrameParser,
  HEADER_SIZE,
  type FrameHeader,
  type FrameSink,
  type FrameType,
} from '../src/mux/frame.js';

const MAX = 4 * 1024 * 1024;

interface Parsed {
  type: FrameType;
  flags: number;
  streamId: number;
  length: number;
  payload?: Buffer;
}

/** Collects frames; a Data frame's payload is joined from its pieces. */
function collector(): FrameSink & { frames: Parsed[]; pieces: Buffer[] } {
  const frames: Parsed[] = [];
  const pieces: Buffer[] = [];
  let current: Buffer[] = [];
  return {
    frames,
    pieces,
    onHeader(h: FrameHeader) {
      if (h.type !== FRAME_TYPE.DATA) frames.push({ type: h.type, flags: h.flags, streamId: h.streamId, length: h.length });
      current = [];
    },
    onPayload(_h, piece) {
      pieces.push(piece);
      current.push(piece);
    },
    onDataEnd(h) {
      frames.push({ type: h.type, flags: h.flags, streamId: h.streamId, length: h.length, payload: Buffer.concat(current) });
    },
  };
}

function encodeFrame(f: Parsed): Buffer {
  return Buffer.concat([encodeHeader(f.type, f.flags, f.streamId, f.length), f.payload ?? Buffer.alloc(0)]);
}

function parseAll(chunks: Buffer[], max = MAX) {
  const parser = new FrameParser(max);
  const sink = collector();
  let error;
  for (const c of chunks) error = parser.push(c, sink) ?? error;
  return { ...sink, error };
}

describe('yamux header', () => {
  it('encodes the spec layout: version, type, flags, stream id, length, big-endian', () => {
    expect(encodeHeader(FRAME_TYPE.WINDOW_UPDATE, FLAG.SYN | FLAG.ACK, 0x01020304, 0x0a0b0c0d).toString('hex')).toBe('000100030102030' + '40a0b0c0d');
    expect(encodeHeader(FRAME_TYPE.GO_AWAY, 0, 0, 1).toString('hex')).toBe('000300000000000000000001');
  });

  it('decodes what it encodes', () => {
    const h = decodeHeader(encodeHeader(FRAME_TYPE.DATA, FLAG.FIN, 7, 100), 0, MAX);
    expect(h).toEqual({ version: 0, type: FRAME_TYPE.DATA, flags: FLAG.FIN, streamId: 7, length: 100 });
  });

  it.each([
    ['a bad version', Buffer.from('010000000000000100000000', 'hex'), 'ERR_MUX_BAD_VERSION'],
    ['an unknown type', Buffer.from('000400000000000100000000', 'hex'), 'ERR_MUX_BAD_TYPE'],
    ['a data frame longer than the largest window', encodeHeader(FRAME_TYPE.DATA, 0, 1, MAX + 1), 'ERR_MUX_FRAME_TOO_LARGE'],
    ['a data frame on stream 0', encodeHeader(FRAME_TYPE.DATA, 0, 0, 1), 'ERR_MUX_BAD_STREAM_ID'],
    ['a ping on a stream', encodeHeader(FRAME_TYPE.PING, FLAG.SYN, 3, 1), 'ERR_MUX_BAD_STREAM_ID'],
    ['a go away on a stream', encodeHeader(FRAME_TYPE.GO_AWAY, 0, 3, 0), 'ERR_MUX_BAD_STREAM_ID'],
  ])('rejects %s', (_what, bytes, code) => {
    expect(decodeHeader(bytes, 0, MAX)).toMatchObject({ error: code });
    const parsed = parseAll([bytes, encodeHeader(FRAME_TYPE.PING, FLAG.SYN, 0, 1)]);
    expect(parsed.error).toMatchObject({ error: code });
    // Nothing after a protocol error is parsed.
    expect(parsed.frames).toEqual([]);
  });

  it('accepts a window update of any size (it is not a payload)', () => {
    expect(decodeHeader(encodeHeader(FRAME_TYPE.WINDOW_UPDATE, 0, 1, 0xffffffff), 0, MAX)).toMatchObject({ length: 0xffffffff });
  });
});

describe('FrameParser', () => {
  const frames: Parsed[] = [
    { type: FRAME_TYPE.WINDOW_UPDATE, flags: FLAG.SYN, streamId: 1, length: 0 },
    { type: FRAME_TYPE.DATA, flags: 0, streamId: 1, length: 5, payload: Buffer.from('hello') },
    { type: FRAME_TYPE.DATA, flags: FLAG.FIN, streamId: 1, length: 0, payload: Buffer.alloc(0) },
    { type: FRAME_TYPE.PING, flags: FLAG.SYN, streamId: 0, length: 42 },
    { type: FRAME_TYPE.DATA, flags: FLAG.ACK, streamId: 2, length: 3, payload: Buffer.from('abc') },
    { type: FRAME_TYPE.GO_AWAY, flags: 0, streamId: 0, length: 0 },
  ];
  const wire = Buffer.concat(frames.map(encodeFrame));

  it('parses frames whole, coalesced in one chunk', () => {
    expect(parseAll([wire]).frames).toEqual(frames);
  });

  it('parses frames fed byte by byte', () => {
    const bytes = [...wire].map((b) => Buffer.from([b]));
    const parsed = parseAll(bytes);
    expect(parsed.frames).toEqual(frames);
    expect(parsed.error).toBeUndefined();
  });

  it('hands a big payload on as views of the chunks it arrived in, never a copy', () => {
    const payload = Buffer.alloc(1024 * 1024, 7);
    const chunk = Buffer.concat([encodeHeader(FRAME_TYPE.DATA, 0, 1, payload.length), payload]);
    const first = chunk.subarray(0, 70_000);
    const second = chunk.subarray(70_000);
    const parsed = parseAll([first, second]);
    expect(parsed.pieces).toHaveLength(2);
    expect(parsed.pieces[0].buffer).toBe(first.buffer);
    expect(parsed.pieces[0].byteOffset).toBe(first.byteOffset + HEADER_SIZE);
    expect(parsed.pieces[1].buffer).toBe(second.buffer);
    expect(parsed.frames[0].payload!.equals(payload)).toBe(true);
  });
});

const frameArb: fc.Arbitrary<Parsed> = fc.oneof(
  fc
    .record({ flags: fc.integer({ min: 0, max: 15 }), streamId: fc.integer({ min: 1, max: 0xffffffff }), payload: fc.uint8Array({ maxLength: 300 }) })
    .map(({ flags, streamId, payload }) => ({ type: FRAME_TYPE.DATA, flags, streamId, length: payload.length, payload: Buffer.from(payload) })),
  fc
    .record({ flags: fc.integer({ min: 0, max: 15 }), streamId: fc.integer({ min: 1, max: 0xffffffff }), length: fc.integer({ min: 0, max: 0xffffffff }) })
    .map((r) => ({ type: FRAME_TYPE.WINDOW_UPDATE, ...r })),
  fc
    .record({ type: fc.constantFrom(FRAME_TYPE.PING, FRAME_TYPE.GO_AWAY), flags: fc.integer({ min: 0, max: 3 }), length: fc.integer({ min: 0, max: 0xffffffff }) })
    .map((r) => ({ ...r, streamId: 0 })),
);

/** Splits `bytes` at the given cut points. */
function split(bytes: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const p of points) {
    out.push(bytes.subarray(at, p));
    at = p;
  }
  out.push(bytes.subarray(at));
  return out;
}

describe('FrameParser (fast-check)', () => {
  it('any frames, in any split, parse back to themselves', () => {
    fc.assert(
      fc.property(fc.array(frameArb, { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 30 }), (frames, cuts) => {
        const wire = Buffer.concat(frames.map(encodeFrame));
        const parsed = parseAll(split(wire, cuts));
        expect(parsed.error).toBeUndefined();
        expect(parsed.frames).toEqual(frames);
      }),
      { numRuns: 500 },
    );
  });

  it('arbitrary bytes never throw: frames, or a protocol error, or waiting for more', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.array(fc.nat(), { maxLength: 10 }), (bytes, cuts) => {
        const parsed = parseAll(split(Buffer.from(bytes), cuts), 256);
        if (parsed.error) expect(parsed.error.message).toMatch(/yamux|exceeds|frame on stream/);
      }),
      { numRuns: 2000 },
    );
  });

  it('a bad version, type or length anywhere in a valid stream is reported after the frames before it', () => {
    fc.assert(
      fc.property(
        fc.array(frameArb, { maxLength: 8 }),
        fc.constantFrom(
          [Buffer.from('050000000000000100000000', 'hex'), 'ERR_MUX_BAD_VERSION'] as const,
          [Buffer.from('00ff00000000000100000000', 'hex'), 'ERR_MUX_BAD_TYPE'] as const,
          [encodeHeader(FRAME_TYPE.DATA, 0, 1, MAX + 1), 'ERR_MUX_FRAME_TOO_LARGE'] as const,
        ),
        fc.array(fc.nat(), { maxLength: 10 }),
        (before, [bad, code], cuts) => {
          const wire = Buffer.concat([...before.map(encodeFrame), bad, encodeHeader(FRAME_TYPE.PING, FLAG.SYN, 0, 1)]);
          const parsed = parseAll(split(wire, cuts));
          expect(parsed.error?.error).toBe(code);
          expect(parsed.frames).toEqual(before);
        },
      ),
      { numRuns: 300 },
    );
  });
});
