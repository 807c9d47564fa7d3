// `splicer proxy --listen mux://HOST:PORT` and `--listen mux+tls://HOST:PORT`: the --listen
// parser that takes them beside plain HOST:PORT, the TLS and --mux-* flags, and the checks that
// name what is wrong with a combination.
import { InvalidArgumentError, type Command } from 'commander';
import type { HostPort } from '../net/host-port.js';
import type { MuxListenAddress } from '../proxy/mux-address.js';
import type { MuxTlsFiles } from '../proxy/mux-listener.js';
import { AddressError } from '../net/host-port.js';
import { parseTransportAddress } from '../net/transport-url.js';
import { addMuxOptions } from './mux-flags.js';
import { serverTlsFrom } from './tls-flags.js';

/** A proxy --listen address: plain TCP, or (`mux`) yamux over TCP or TLS. */
export type ProxyListenAddress = HostPort & { mux?: 'tcp' | 'tls' };

const PROXY_SCHEMES = ['tcp', 'mux', 'mux+tls'];

export function proxyListenArg(defaultHost: string) {
  return (value: string, previous: ProxyListenAddress[] | undefined): ProxyListenAddress[] => {
    const scheme = /^\s*([a-z][a-z0-9+.-]*):\/\//i.exec(value)?.[1].toLowerCase();
    if (scheme !== undefined && !PROXY_SCHEMES.includes(scheme)) {
      throw new InvalidArgumentError(`"${value}": the schemes taken are mux:// (yamux) and mux+tls:// (yamux over TLS); plain HOST:PORT (or tcp://) is TCP`);
    }
    let parsed;
    try {
      parsed = parseTransportAddress(value, { defaultHost, allowZero: true });
    } catch (err) {
      if (err instanceof AddressError) throw new InvalidArgumentError(err.message);
      throw err;
    }
    const { host, port } = parsed;
    const address: ProxyListenAddress = parsed.scheme === 'tcp' ? { host, port } : { host, port, mux: parsed.scheme === 'mux' ? 'tcp' : 'tls' };
    return [...(previous ?? []), address];
  };
}

export interface ProxyMuxCliOptions {
  tlsCert?: string;
  tlsKey?: string;
  muxWindow: number;
  muxMaxStreams: number;
  muxKeepalive: number;
  workers: number;
  acceptProxyProtocol?: boolean;
}

export function addProxyMuxOptions(command: Command): Command {
  command
    .option('--tls-cert <file>', 'PEM certificate of the mux+tls:// listen addresses')
    .option('--tls-key <file>', 'PEM private key of --tls-cert');
  return addMuxOptions(command);
}

/** The plain and the mux listen addresses; throws, naming the flag, on a combination that cannot run. */
export function splitListen(listen: readonly ProxyListenAddress[], options: ProxyMuxCliOptions): { listen: HostPort[]; muxListen: MuxListenAddress[] } {
  const plain: HostPort[] = [];
  const muxListen: MuxListenAddress[] = [];
  for (const { mux, host, port } of listen) {
    if (mux) muxListen.push({ host, port, tls: mux === 'tls' });
    else plain.push({ host, port });
  }
  if ((options.tlsCert === undefined) !== (options.tlsKey === undefined)) throw new Error('--tls-cert and --tls-key go together');
  if (muxListen.some((address) => address.tls) && options.tlsCert === undefined) throw new Error('--listen mux+tls:// needs --tls-cert and --tls-key');
  if (muxListen.length > 0 && options.acceptProxyProtocol) {
    // The header would come once per connection, naming no stream's client: the streams' client is the connection's peer.
    throw new Error('--accept-proxy-protocol does not apply with a mux:// or mux+tls:// --listen');
  }
  if (muxListen.length > 0 && options.workers > 1) {
    throw new Error('--workers does not apply with a mux:// or mux+tls:// --listen: a session and its streams live in one process');
  }
  return { listen: plain, muxListen };
}

/** The mux sessions' options, from the --mux-* flags. */
export function muxSessionOptions(options: ProxyMuxCliOptions) {
  return { maxWindow: options.muxWindow, maxStreams: options.muxMaxStreams, keepaliveInterval: Math.round(options.muxKeepalive * 1000) };
}

/** The certificate and key, read once at start (they take a restart to change). */
/** The mux+tls:// certificate and key, with the fingerprint clients pin (logged at start). */
export function readMuxTls(options: ProxyMuxCliOptions): (MuxTlsFiles & { fingerprint: string }) | undefined {
  return serverTlsFrom(options);
}

/** What a reload cannot change: the sessions' settings and the TLS files. */
export const PROXY_MUX_RESTART_ONLY = ['tlsCert', 'tlsKey', 'muxWindow', 'muxMaxStreams', 'muxKeepalive'] as const;
