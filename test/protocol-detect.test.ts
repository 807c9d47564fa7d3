import { describe, expect, it } from 'vitest';
import { detectProtocol } from '../src/protocol/detect.js';
import { Reader } from '../src/protocol/reader.js';

describe('detectProtocol', () => {
  it('tells the protocols apart by the first byte', () => {
    expect(detectProtocol(0x04)).toBe('socks4');
    expect(detectProtocol(0x05)).toBe('socks5');
    expect(detectProtocol(0x16)).toBe('tls');
    for (const c of 'ACDGHOPTZ') expect(detectProtocol(c.charCodeAt(0))).toBe('http');
    for (const b of [0x00, 0x01, 0x03, 0x06, 0x40, 0x5b, 0x61, 0x7a, 0x80, 0xff]) expect(detectProtocol(b)).toBe('unknown');
  });
});

describe('Reader', () => {
  it('returns undefined instead of reading past the end, without moving', () => {
    const r = new Reader(Buffer.from([1, 2, 3]));
    expect(r.u16()).toBe(0x0102);
    expect(r.u16()).toBeUndefined();
    expect(r.bytes(2)).toBeUndefined();
    expect(r.pos).toBe(2);
    expect(r.u8()).toBe(3);
    expect(r.u8()).toBeUndefined();
    expect(r.bytes(0)).toEqual(Buffer.alloc(0));
    expect(r.remaining).toBe(0);
  });

  it('reads NUL-terminated fields up to a cap', () => {
    expect(new Reader(Buffer.from('ab\0c')).cstring(2)).toEqual(Buffer.from('ab'));
    expect(new Reader(Buffer.from('\0')).cstring(0)).toEqual(Buffer.alloc(0));
    expect(new Reader(Buffer.from('ab')).cstring(2)).toBe('incomplete');
    expect(new Reader(Buffer.from('abc')).cstring(2)).toBe('overflow');
    expect(new Reader(Buffer.from('abc\0')).cstring(2)).toBe('overflow');
    const r = new Reader(Buffer.from('x\0y\0'), 2);
    expect(r.cstring(5)).toEqual(Buffer.from('y'));
    expect(r.pos).toBe(4);
  });
});
