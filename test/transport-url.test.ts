// `[scheme://]HOST:PORT` without sockets: every scheme, case, the HOST:PORT rules kept, unknown
// schemes named; and the backoff of a lost mux session.
import { describe, expect, it } from 'vitest';
import { formatTransportAddress, isMux, isTls, parseTransportAddress, TRANSPORT_SCHEMES } from '../src/net/transport-url.js';
import { AddressError } from '../src/net/host-port.js';
import { backoffDelay } from '../src/forwarder/mux-sessions.js';

describe('parseTransportAddress', () => {
  it.each([
    ['127.0.0.1:80', { scheme: 'tcp', host: '127.0.0.1', port: 80 }],
    ['tcp://127.0.0.1:80', { scheme: 'tcp', host: '127.0.0.1', port: 80 }],
    ['tls://example.com:443', { scheme: 'tls', host: 'example.com', port: 443 }],
    ['mux://[::1]:7000', { scheme: 'mux', host: '::1', port: 7000 }],
    ['mux+tls://exit.example.com:7000', { scheme: 'mux+tls', host: 'exit.example.com', port: 7000 }],
    ['MUX+TLS://10.0.0.1:7000', { scheme: 'mux+tls', host: '10.0.0.1', port: 7000 }],
    ['  Tls://h:1  ', { scheme: 'tls', host: 'h', port: 1 }],
  ])('%s', (text, expected) => {
    expect(parseTransportAddress(text)).toEqual(expected);
  });

  it('takes :PORT and port 0 as parseHostPort does, after the scheme too', () => {
    expect(parseTransportAddress('mux://:0', { defaultHost: '127.0.0.1', allowZero: true })).toEqual({ scheme: 'mux', host: '127.0.0.1', port: 0 });
    expect(() => parseTransportAddress('tls://:0')).toThrow(AddressError);
  });

  it('names the schemes taken when given another', () => {
    for (const text of ['http://127.0.0.1:80', 'socks5://h:1', 'tls+mux://h:1', 'udp://h:1']) {
      const err = (() => {
        try {
          parseTransportAddress(text);
        } catch (e) {
          return e as Error;
        }
        throw new Error(`${text} was taken`);
      })();
      expect(err).toBeInstanceOf(AddressError);
      expect(err.message).toContain(text.split('://')[0] + '://');
      for (const scheme of TRANSPORT_SCHEMES) expect(err.message).toContain(`${scheme}://`);
    }
  });

  it('names the address as written when its HOST:PORT part is wrong', () => {
    expect(() => parseTransportAddress('tls://h:99999')).toThrow(/"tls:\/\/h:99999": port 99999 is out of range/);
    expect(() => parseTransportAddress('mux://::1:80')).toThrow(/"mux:\/\/::1:80": write an IPv6 address in brackets/);
    expect(() => parseTransportAddress('mux+tls://h')).toThrow(/expected HOST:PORT/);
    expect(() => parseTransportAddress('://h:1')).toThrow(/a scheme is letters before/);
  });

  it('formats back to what it parsed (tcp with no scheme), and says what each scheme is', () => {
    for (const text of ['127.0.0.1:80', 'tls://h:1', 'mux://[::1]:7000', 'mux+tls://h:2']) expect(formatTransportAddress(parseTransportAddress(text))).toBe(text);
    expect(TRANSPORT_SCHEMES.filter(isMux)).toEqual(['mux', 'mux+tls']);
    expect(TRANSPORT_SCHEMES.filter(isTls)).toEqual(['tls', 'mux+tls']);
  });
});

describe('backoffDelay', () => {
  it('doubles from the first wait up to the cap, and jitters down to half', () => {
    const top = (n: number) => backoffDelay(n, 250, 30_000, () => 1);
    const bottom = (n: number) => backoffDelay(n, 250, 30_000, () => 0);
    expect([1, 2, 3, 4].map(top)).toEqual([250, 500, 1000, 2000]);
    expect([1, 2, 3, 4].map(bottom)).toEqual([125, 250, 500, 1000]);
    expect(top(8)).toBe(30_000);
    expect(top(1000)).toBe(30_000);
    expect(bottom(1000)).toBe(15_000);
    for (let i = 0; i < 100; i++) {
      const d = backoffDelay(5, 250, 30_000);
      expect(d).toBeGreaterThanOrEqual(2000);
      expect(d).toBeLessThanOrEqual(4000);
    }
  });
});
