// `[SCHEME://]HOST:PORT`: an address and the transport spoken there. Pure; the HOST:PORT part is
// parseHostPort's, so its messages and defaults (`:PORT`, `[IPv6]:PORT`) hold here too.
import { AddressError, formatHostPort, parseHostPort, type HostPort } from './host-port.js';

/**
 * tcp: plain TCP (the default); tls: TLS over TCP, a connection per connection; mux: a yamux
 * session over TCP, a stream per connection; mux+tls: a yamux session over TLS.
 */
export const TRANSPORT_SCHEMES = ['tcp', 'tls', 'mux', 'mux+tls'] as const;
export type TransportScheme = (typeof TRANSPORT_SCHEMES)[number];

export interface TransportAddress extends HostPort {
  scheme: TransportScheme;
}

const SCHEME_PREFIX = /^([a-z][a-z0-9+.-]*):\/\//i;

/** Parses `[scheme://]HOST:PORT`; the scheme is case-insensitive, `tcp` when absent. Throws AddressError. */
export function parseTransportAddress(text: string, options: { defaultHost?: string; allowZero?: boolean } = {}): TransportAddress {
  const value = text.trim();
  const prefix = SCHEME_PREFIX.exec(value);
  let scheme: TransportScheme = 'tcp';
  let rest = value;
  if (prefix) {
    const named = prefix[1].toLowerCase();
    if (!(TRANSPORT_SCHEMES as readonly string[]).includes(named)) {
      throw new AddressError(`"${text}": unknown scheme ${prefix[1]}://; the schemes taken are ${TRANSPORT_SCHEMES.map((s) => `${s}://`).join(', ')} (none: tcp)`);
    }
    scheme = named as TransportScheme;
    rest = value.slice(prefix[0].length);
  } else if (value.includes('://')) {
    throw new AddressError(`"${text}": a scheme is letters before ://, one of ${TRANSPORT_SCHEMES.join(', ')}`);
  }
  try {
    return { scheme, ...parseHostPort(rest, options) };
  } catch (err) {
    // The message names what the user wrote, scheme and all.
    if (err instanceof AddressError && prefix) throw new AddressError(err.message.replace(JSON.stringify(rest), JSON.stringify(text)));
    throw err;
  }
}

/** `scheme://host:port`, with no scheme for tcp (as a plain address is written). */
export function formatTransportAddress(address: TransportAddress): string {
  return (address.scheme === 'tcp' ? '' : `${address.scheme}://`) + formatHostPort(address);
}

/** The address carries yamux sessions. */
export const isMux = (scheme: TransportScheme): boolean => scheme === 'mux' || scheme === 'mux+tls';

/** The address's connections are TLS. */
export const isTls = (scheme: TransportScheme): boolean => scheme === 'tls' || scheme === 'mux+tls';
