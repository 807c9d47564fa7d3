// The proxy's --listen with mux:// and mux+tls:// addresses, without sockets: what each spelling
// parses to, what is refused and with which words, and the mux addresses compared across a reload.
import { InvalidArgumentError } from 'commander';
import { describe, expect, it } from 'vitest';
import { proxyListenArg, splitListen, type ProxyMuxCliOptions } from '../src/cli/proxy-mux.js';
import { formatMuxAddress, muxListenChanges } from '../src/proxy/mux-address.js';
import { openProxyRisk, protectsHost } from '../src/proxy/exposure.js';

const parse = (...values: string[]) => values.reduce<ReturnType<ReturnType<typeof proxyListenArg>> | undefined>((list, value) => proxyListenArg('127.0.0.1')(value, list), undefined)!;
const flags: ProxyMuxCliOptions = { muxWindow: 4 << 20, muxMaxStreams: 1024, muxKeepalive: 15, workers: 1 };

describe('proxy --listen with mux addresses', () => {
  it('parses plain, mux:// and mux+tls:// addresses side by side, any case, :PORT as loopback', () => {
    expect(parse('127.0.0.1:1080', 'mux://0.0.0.0:7000', 'MUX+TLS://[::1]:7443', 'mux://:7001')).toEqual([
      { host: '127.0.0.1', port: 1080 },
      { host: '0.0.0.0', port: 7000, mux: 'tcp' },
      { host: '::1', port: 7443, mux: 'tls' },
      { host: '127.0.0.1', port: 7001, mux: 'tcp' },
    ]);
  });

  it('refuses another scheme, naming the ones taken, and a bad HOST:PORT after a scheme', () => {
    expect(() => parse('ftp://127.0.0.1:1')).toThrow(InvalidArgumentError);
    expect(() => parse('ftp://127.0.0.1:1')).toThrow(/tls:\/\/, mux:\/\/ \(yamux\) and mux\+tls:\/\//);
    expect(parse('tls://127.0.0.1:1', 'TCP://127.0.0.1:2')).toEqual([{ host: '127.0.0.1', port: 1, tls: true }, { host: '127.0.0.1', port: 2 }]);
    expect(() => parse('mux+tls://127.0.0.1:99999')).toThrow(InvalidArgumentError);
    expect(() => parse('mux://')).toThrow(InvalidArgumentError);
  });

  it('splits tls:// for the server as TLS clients, with a certificate', () => {
    expect(splitListen(parse('tls://127.0.0.1:4'), { ...flags, tlsCert: 'c', tlsKey: 'k' }).muxListen).toEqual([{ host: '127.0.0.1', port: 4, tls: true, tlsClients: true }]);
    expect(() => splitListen(parse('tls://127.0.0.1:4'), flags)).toThrow('--listen tls:// needs --tls-cert and --tls-key');
    expect(() => splitListen(parse('tls://127.0.0.1:4'), { ...flags, tlsCert: 'c', tlsKey: 'k', workers: 2 })).toThrow(/--workers does not apply with a tls:\/\//);
    expect(() => splitListen(parse('tls://127.0.0.1:4'), { ...flags, tlsCert: 'c', tlsKey: 'k', acceptProxyProtocol: true })).toThrow(/--accept-proxy-protocol does not apply with a tls:\/\//);
  });

  it('splits the list for the server and refuses what cannot run, naming the flag', () => {
    expect(splitListen(parse('127.0.0.1:1', 'mux://127.0.0.1:2', 'mux+tls://127.0.0.1:3'), { ...flags, tlsCert: 'c', tlsKey: 'k' })).toEqual({
      listen: [{ host: '127.0.0.1', port: 1 }],
      muxListen: [
        { host: '127.0.0.1', port: 2, tls: false },
        { host: '127.0.0.1', port: 3, tls: true },
      ],
    });
    expect(() => splitListen(parse('mux+tls://127.0.0.1:3'), flags)).toThrow('--listen mux+tls:// needs --tls-cert and --tls-key');
    expect(() => splitListen(parse('mux://127.0.0.1:3'), { ...flags, tlsKey: 'k' })).toThrow('--tls-cert and --tls-key go together');
    expect(() => splitListen(parse('mux://127.0.0.1:3'), { ...flags, workers: 2 })).toThrow(/--workers does not apply/);
    expect(() => splitListen(parse('mux://127.0.0.1:3'), { ...flags, acceptProxyProtocol: true })).toThrow(/--accept-proxy-protocol does not apply/);
    // Plain addresses keep what they had.
    expect(splitListen(parse('127.0.0.1:1'), { ...flags, workers: 2, acceptProxyProtocol: true }).muxListen).toEqual([]);
  });

  it('compares mux addresses by scheme and HOST:PORT across a reload', () => {
    const a = { host: '127.0.0.1', port: 7000, tls: false };
    const b = { host: '127.0.0.1', port: 7000, tls: true };
    expect(formatMuxAddress(b)).toBe('mux+tls://127.0.0.1:7000');
    expect(muxListenChanges([a], [a])).toEqual({ added: [], removed: [] });
    expect(muxListenChanges([a], [b])).toEqual({ added: [b], removed: [a] });
  });

  it('counts a mux address beyond loopback as exposed: an open proxy without auth, and the host protected', () => {
    const options = { listen: [], muxListen: [{ host: '0.0.0.0', port: 7000, tls: true }] };
    expect(openProxyRisk(options)).toMatch(/listening on mux\+tls:\/\/0\.0\.0\.0:7000 /);
    expect(openProxyRisk({ ...options, open: true })).toBeNull();
    expect(protectsHost(options)).toBe(true);
    expect(protectsHost({ listen: [], muxListen: [{ host: '127.0.0.1', port: 7000, tls: false }] })).toBe(false);
  });
});
