// Shared checks for the incremental protocol parsers: every message whole, fed byte by byte, and
// coalesced with the bytes that follow it (mscdex/socksv5 test/test-server-parser.js style).
import { expect } from 'vitest';

type Parsed = { status: 'incomplete' } | { status: 'ok'; consumed: number } | { status: 'error'; code: string };

export const TRAILING = Buffer.from('\x00\x05optimistic payload\r\n\r\n');

/**
 * Parses `message` whole, every proper prefix of it (each must be 'incomplete'), and the message
 * followed by TRAILING (same result; consumed excludes the trailer). Returns the whole result.
 */
export function expectMessage<R extends Parsed>(parse: (buf: Buffer) => R, message: Buffer): Extract<R, { status: 'ok' }> {
  const whole = parse(message);
  expect(whole.status, JSON.stringify(whole)).toBe('ok');
  const ok = whole as Extract<R, { status: 'ok' }>;
  expect(ok.consumed).toBe(message.length);
  for (let i = 0; i < message.length; i++) {
    // A fresh copy each time: a parser must not peek past the end of the bytes it was given.
    expect(parse(Buffer.from(message.subarray(0, i))), `prefix of ${i} bytes`).toEqual({ status: 'incomplete' });
  }
  expect(parse(Buffer.concat([message, TRAILING]))).toEqual(whole);
  return ok;
}

/**
 * `bytes` is invalid: fed byte by byte, prefixes are 'incomplete' until the first byte that proves
 * it bad, and from there on every prefix (and the whole, and the whole plus more) gives one error.
 */
export function expectError<R extends Parsed>(parse: (buf: Buffer) => R, bytes: Buffer, code: string, reply?: number): R {
  const whole = parse(bytes);
  expect(whole).toMatchObject({ status: 'error', code });
  if (reply !== undefined) expect(whole).toMatchObject({ reply });
  let seenError = false;
  for (let i = 0; i < bytes.length; i++) {
    const result = parse(Buffer.from(bytes.subarray(0, i)));
    if (seenError) expect(result, `prefix of ${i} bytes`).toEqual(whole);
    else if (result.status !== 'incomplete') {
      expect(result, `prefix of ${i} bytes`).toEqual(whole);
      seenError = true;
    }
  }
  expect(parse(Buffer.concat([bytes, TRAILING]))).toEqual(whole);
  return whole;
}

export function hex(text: string): Buffer {
  return Buffer.from(text.replace(/\s+/g, ''), 'hex');
}
