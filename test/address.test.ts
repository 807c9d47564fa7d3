import { describe, expect, it } from 'vitest';
import { formatHostPort, isLoopback, parseHostPort } from '../src/net/host-port.js';

describe('parseHostPort', () => {
  it('reads IPv4, names and bracketed IPv6', () => {
    expect(parseHostPort('127.0.0.1:80')).toEqual({ host: '127.0.0.1', port: 80 });
    expect(parseHostPort('localhost:65535')).toEqual({ host: 'localhost', port: 65535 });
    expect(parseHostPort('[::1]:9000')).toEqual({ host: '::1', port: 9000 });
  });

  it('fills a missing host only when a default is given', () => {
    expect(parseHostPort(':8080', { defaultHost: '127.0.0.1' })).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(() => parseHostPort(':8080')).toThrow(/host is missing/);
  });

  it('names what is wrong', () => {
    expect(() => parseHostPort('foo')).toThrow(/expected HOST:PORT/);
    expect(() => parseHostPort('::1:80')).toThrow(/\[::1\]:80/);
    expect(() => parseHostPort('a:b')).toThrow(/port "b" is not a number/);
    expect(() => parseHostPort('a:70000')).toThrow(/out of range/);
    expect(() => parseHostPort('a:0')).toThrow(/out of range/);
    expect(parseHostPort('a:0', { allowZero: true }).port).toBe(0);
    expect(() => parseHostPort('[nothost]:1')).toThrow(/not an IPv6 address/);
  });

  it('formats back with brackets for IPv6', () => {
    expect(formatHostPort({ host: '::1', port: 1 })).toBe('[::1]:1');
    expect(formatHostPort({ host: '10.0.0.1', port: 2 })).toBe('10.0.0.1:2');
  });

  it('knows loopback', () => {
    expect(isLoopback('127.0.0.1')).toBe(true);
    expect(isLoopback('127.1.2.3')).toBe(true);
    expect(isLoopback('::1')).toBe(true);
    expect(isLoopback('0.0.0.0')).toBe(false);
    expect(isLoopback('10.0.0.1')).toBe(false);
  });
});
