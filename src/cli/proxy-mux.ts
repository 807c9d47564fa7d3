// `splicer proxy --listen mux://HOST:PORT`, `mux+tls://HOST:PORT` and `tls://HOST:PORT`: the
// --listen parser that takes them beside plain HOST:PORT, the TLS and --mux-* flags, and the
// checks that name what is wrong with a combination.
import { InvalidArgumentError, type Command } from 'commander';
import type { HostPort } from '../net/host-port.js';
import { muxScheme, type MuxListenAddress } from '../proxy/mux-address.js';
import { AddressError } from '../net/host-port.js';
import { parseTransportAddress } from '../net/transport-url.js';
import { addMuxOptions } from './mux-flags.js';

/** A proxy --listen address: plain TCP, (`mux`) yamux over TCP or TLS, or (`tls`) TLS clients. */
export type ProxyListenAddress = HostPort & { mux?: 'tcp' | 'tls'; tls?: true };

const PROXY_SCHEMES = ['tcp', 'tls', 'mux', 'mux+tls'];

export function proxyListenArg(defaultHost: string) {
  return (value: string, previous: ProxyListenAddress[] | undefined): ProxyListenAddress[] => {
    const scheme = /^\s*([a-z][a-z0-9+.-]*):\/\//i.exec(value)?.[1].toLowerCase();
    if (scheme !== undefined && !PROXY_SCHEMES.includes(scheme)) {
      throw new InvalidArgumentError(`"${value}": the schemes taken are tls://, mux:// (yamux) and mux+tls:// (yamux over TLS); plain HOST:PORT (or tcp://) is TCP`);
    }
    let parsed;
    try {
      parsed = parseTransportAddress(value, { defaultHost, allowZero: true });
    } catch (err) {
      if (err instanceof AddressError) throw new InvalidArgumentError(err.message);
      throw err;
    }
    const { host, port } = parsed;
    const address: ProxyListenAddress =
      parsed.scheme === 'tcp' ? { host, port } : parsed.scheme === 'tls' ? { host, port, tls: true } : { host, port, mux: parsed.scheme === 'mux' ? 'tcp' : 'tls' };
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
    .option('--tls-cert <file>', 'PEM certificate of the tls:// and mux+tls:// listen addresses (its SHA-256 fingerprint is logged at start)')
    .option('--tls-key <file>', 'PEM private key of --tls-cert');
  return addMuxOptions(command);
}

/** The plain and the mux listen addresses; throws, naming the flag, on a combination that cannot run. */
export function splitListen(listen: readonly ProxyListenAddress[], options: ProxyMuxCliOptions): { listen: HostPort[]; muxListen: MuxListenAddress[] } {
  const plain: HostPort[] = [];
  const muxListen: MuxListenAddress[] = [];
  for (const { mux, tls, host, port } of listen) {
    if (tls) muxListen.push({ host, port, tls: true, tlsClients: true });
    else if (mux) muxListen.push({ host, port, tls: mux === 'tls' });
    else plain.push({ host, port });
  }
  if ((options.tlsCert === undefined) !== (options.tlsKey === undefined)) throw new Error('--tls-cert and --tls-key go together');
  const tlsAddress = muxListen.find((address) => address.tls);
  if (tlsAddress && options.tlsCert === undefined) throw new Error(`--listen ${muxScheme(tlsAddress)} needs --tls-cert and --tls-key`);
  const muxAddress = muxListen.find((address) => !address.tlsClients);
  if (muxListen.length > 0 && options.acceptProxyProtocol) {
    // On a mux address the header would come once per connection, naming no stream's client: the
    // streams' client is the connection's peer. A tls:// address is refused too: its connections are Node's TLS sockets.
    throw new Error(`--accept-proxy-protocol does not apply with a ${muxScheme(muxListen[0])} --listen`);
  }
  if (muxAddress && options.workers > 1) {
    throw new Error('--workers does not apply with a mux:// or mux+tls:// --listen: a session and its streams live in one process');
  }
  if (muxListen.length > 0 && options.workers > 1) throw new Error('--workers does not apply with a tls:// --listen (one process serves it)');
  return { listen: plain, muxListen };
}

/** The mux sessions' options, from the --mux-* flags. */
export function muxSessionOptions(options: ProxyMuxCliOptions) {
  return { maxWindow: options.muxWindow, maxStreams: options.muxMaxStreams, keepaliveInterval: Math.round(options.muxKeepalive * 1000) };
}


/** What a reload cannot change: the sessions' settings and the TLS files. */
export const PROXY_MUX_RESTART_ONLY = ['tlsCert', 'tlsKey', 'muxWindow', 'muxMaxStreams', 'muxKeepalive'] as const;
