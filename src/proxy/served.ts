// What a proxy's handshakes are served with, made from its options: the timeouts and limits, and
// the SOCKS and HTTP contexts, one pair for sockets and one for mux streams (no fd: the JS engine,
// no BIND, no UDP ASSOCIATE). Replaced whole by a reload.
import { hostAddressTest } from './host-guard.js';
import { HttpProxy } from './http-proxy.js';
import type { ClientSession, HandshakeSession } from './session.js';
import { NativeSession } from './native-session.js';
import type { SocksContext } from './socks.js';
import { bindAndForward } from './bind.js';
import { udpAssociate } from './udp.js';
import { protectsHost } from './exposure.js';
import { DEFAULT_LIMITS, DEFAULT_TIMEOUTS, type ProxyOptions } from './options.js';

/** What a handshake is served with: one pair for sockets, one for mux streams. */
export interface Served {
  socks: SocksContext;
  http: HttpProxy;
}

/** The rest of a handshake that needs a stream (HTTP, BIND, UDP ASSOCIATE): the client as a net.Socket. */
export function onSocket(session: HandshakeSession): ClientSession {
  return session instanceof NativeSession ? session.toClientSession() : (session as ClientSession);
}

/** The timeouts, limits and contexts for these options; `signal`: the server's shutdown. */
export function servedWith(options: ProxyOptions, signal: AbortSignal) {
  const timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
  const limits = { ...DEFAULT_LIMITS, ...options.limits };
  const tunnel = {
    rules: options.rules ?? [],
    connectTimeout: timeouts.connect,
    idleTimeout: timeouts.idle,
    engine: options.engine,
    spliceEngine: options.spliceEngine,
    lookup: options.lookup,
    isHostAddress: protectsHost(options) ? hostAddressTest() : undefined,
    signal,
  };
  const auth = { credentials: options.credentials, allowEmptyCredentials: options.allowEmptyCredentials ?? false };
  const udp = { ...tunnel, advertise: options.udpAdvertise, logger: options.logger };
  const socks: SocksContext = {
    ...tunnel,
    ...auth,
    bind: (session, dest, replies, record) => bindAndForward(onSocket(session), dest, replies, tunnel, record),
    udpAssociate: (session, hint, record) => udpAssociate(onSocket(session), hint, udp, record),
  };
  const http = new HttpProxy({ ...tunnel, ...auth, handshakeTimeout: timeouts.handshake });
  // A mux stream has no fd: the JS engine carries its pair. BIND and UDP ASSOCIATE would hand
  // its client an address of this host's own to use beside the stream: refused (command not supported).
  const streamTunnel = { ...tunnel, engine: 'js' as const, spliceEngine: undefined };
  const forStreams: Served = {
    socks: { ...streamTunnel, ...auth },
    http: new HttpProxy({ ...streamTunnel, ...auth, handshakeTimeout: timeouts.handshake }),
  };
  return { timeouts, limits, forSockets: { socks, http }, forStreams };
}
