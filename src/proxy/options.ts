import type { HostPort } from '../net/host-port.js';
import type { SpliceEngine } from '../engine/splice/engine.js';
import type { EngineChoice, EngineName } from '../engine/contract.js';
import type { Logger } from '../logger.js';
import type { Credentials } from './auth.js';
import type { LookupAll } from '../net/dial.js';
import type { OpenListenFd } from '../net/listeners.js';
import type { ProxyCommand, Rule } from './rules.js';
import type { AcceptPath } from '../engine/splice/acceptor.js';
import type { MuxSessionOptions } from '../mux/options.js';
import type { MuxListenAddress } from './mux-address.js';
import type { MuxTlsFiles } from './mux-listener.js';

export type ProxyProtocol = 'socks4' | 'socks4a' | 'socks5' | 'http';

export interface ProxyTimeouts {
  /** From accept to the end of the handshake (request received), ms. */
  handshake: number;
  /** Lookup and connect to the destination, ms. */
  connect: number;
  /** No byte either way on an established pair, ms; 0 = never. */
  idle: number;
}

export interface ProxyLimits {
  /** Open client connections in all; past it new ones are closed at once. */
  connections: number;
  /** Open client connections from one IP. */
  perClient: number;
}

export type { AcceptPath };

export interface ProxyOptions {
  listen: HostPort[];
  /**
   * Addresses that accept yamux sessions (mux://, or mux+tls:// with `tls`): every stream is served
   * as a connection to `listen` is, its client the peer of the session's connection. The JS engine
   * carries its pair; BIND and UDP ASSOCIATE are refused (command not supported).
   */
  muxListen?: MuxListenAddress[];
  /** The sessions' window, stream count and keepalive. */
  mux?: Omit<MuxSessionOptions, 'role'>;
  /** Certificate and key (PEM) of the mux+tls:// listeners. */
  tls?: MuxTlsFiles;
  /** Listen on sockets this makes (SO_REUSEPORT ones, one per worker process) rather than Node's. */
  listenFd?: OpenListenFd;
  /** Users; when empty, no authentication is asked for. */
  credentials?: Credentials;
  /** Accept a client that sends an empty username and password when auth is on. */
  allowEmptyCredentials?: boolean;
  rules?: Rule[];
  /** Allow listening on a non-loopback address with no auth and no client allow rule. */
  open?: boolean;
  /**
   * Refuse destinations on the proxy's own host (127.0.0.0/8, ::1, 0.0.0.0/8, ::, 169.254.0.0/16,
   * fe80::/10, every interface address) unless an allow rule names them in `to=` by IP or CIDR.
   * 'auto' (the default): when any listen address is beyond loopback.
   */
  protectHost?: boolean | 'auto';
  timeouts?: Partial<ProxyTimeouts>;
  limits?: Partial<ProxyLimits>;
  engine?: EngineChoice;
  spliceEngine?: SpliceEngine;
  /**
   * Who accepts and reads the handshakes. 'native': the addon, with no net.Socket on the CONNECT
   * path (Linux, the splice engine; not with engine 'js'). 'node': net.Server and net.Socket.
   * 'auto' (the default): native where it can be.
   */
  accept?: AcceptPath;
  /** Address given to SOCKS5 UDP clients as where to send datagrams (behind NAT: the public one). */
  udpAdvertise?: string;
  /**
   * Every connection starts with a PROXY protocol header (v1 or v2); its source address is the
   * client for the rules, the per-client limit and the record. One without a valid header within
   * the handshake timeout is closed (outcome `bad-proxy-header`).
   */
  acceptProxyProtocol?: boolean;
  lookup?: LookupAll;
  logger?: Logger;
}

/** One client connection, reported once when it ends. */
export interface ProxyConnectionRecord {
  client: string;
  /** The yamux stream id, for a stream of a mux listener's session (whose peer is `client`). */
  muxStream?: number;
  protocol: ProxyProtocol | 'unknown';
  user?: string;
  command?: ProxyCommand;
  destination?: string;
  engine?: EngineName;
  bytesUp: number;
  bytesDown: number;
  durationMs: number;
  /**
   * How it ended: the forward() reason (eof, reset, error, aborted, timeout) once a pair was
   * forwarded; else what stopped it: denied, auth-failed, bad-request, handshake-timeout,
   * client-closed, limit, bad-proxy-header, or the connect error's code (ECONNREFUSED, ENOTFOUND, ETIMEDOUT...).
   */
  outcome: string;
  /** The protocol's reply code sent to the client (SOCKS REP/CD, or the HTTP status). */
  reply?: number;
  /** For outcome error/reset: the errno name. */
  code?: string;
  /** UDP ASSOCIATE: datagrams dropped (wrong source, FRAG set, bad header, over a cap) and denied by the rules. */
  datagramsDropped?: number;
  datagramsDenied?: number;
}

export const DEFAULT_TIMEOUTS: ProxyTimeouts = { handshake: 10_000, connect: 10_000, idle: 0 };
export const DEFAULT_LIMITS: ProxyLimits = { connections: 10_000, perClient: 1_000 };
