// The proxy's listen addresses served on the JS path: `mux://HOST:PORT`, `mux+tls://HOST:PORT`
// and `tls://HOST:PORT`, as the server and the CLI name and compare them. Apart from the listeners, which load the yamux session (and
// zod with it) only when a mux address is bound.
import { formatHostPort, type HostPort } from '../net/host-port.js';

/** A listen address that carries yamux sessions (`tls`: mux+tls://), or with `tlsClients` TLS clients (tls://). */
export interface MuxListenAddress extends HostPort {
  tls: boolean;
  /** tls://: each TLS connection is one client, with no yamux session in it. */
  tlsClients?: true;
}

export const muxScheme = (address: { tls: boolean; tlsClients?: true }): string => (address.tlsClients ? 'tls://' : address.tls ? 'mux+tls://' : 'mux://');
export const formatMuxAddress = (address: MuxListenAddress): string => muxScheme(address) + formatHostPort(address);

/** Mux addresses to bind and to stop, compared as given (scheme, HOST:PORT before resolution). */
export function muxListenChanges(running: readonly MuxListenAddress[], wanted: readonly MuxListenAddress[]) {
  const keys = (list: readonly MuxListenAddress[]) => new Set(list.map(formatMuxAddress));
  const runningKeys = keys(running);
  const wantedKeys = keys(wanted);
  return {
    added: wanted.filter((address) => !runningKeys.has(formatMuxAddress(address))),
    removed: running.filter((address) => !wantedKeys.has(formatMuxAddress(address))),
  };
}
