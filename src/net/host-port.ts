// HOST:PORT parsing for the CLI and config: pure, with messages that name what was wrong.
import net from 'node:net';
import { unmapIPv4 } from './ip.js';

export interface HostPort {
  host: string;
  port: number;
}

export class AddressError extends Error {
  readonly code = 'ERR_BAD_ADDRESS';
}

/**
 * Parses `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (host = defaultHost).
 * `allowZero` accepts port 0 (listen on any free port).
 */
export function parseHostPort(text: string, options: { defaultHost?: string; allowZero?: boolean } = {}): HostPort {
  const value = text.trim();
  let host: string;
  let portText: string;
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(value);
  if (bracketed) {
    host = bracketed[1];
    portText = bracketed[2];
    if (net.isIPv6(host) === false) throw new AddressError(`"${text}": ${host} in brackets is not an IPv6 address`);
  } else {
    const colon = value.lastIndexOf(':');
    if (colon < 0) throw new AddressError(`"${text}": expected HOST:PORT`);
    host = value.slice(0, colon);
    portText = value.slice(colon + 1);
    if (host.includes(':')) throw new AddressError(`"${text}": write an IPv6 address in brackets, as [${host}]:${portText}`);
    if (host === '') {
      if (options.defaultHost === undefined) throw new AddressError(`"${text}": the host is missing`);
      host = options.defaultHost;
    }
  }
  if (!/^\d+$/.test(portText)) throw new AddressError(`"${text}": port "${portText}" is not a number`);
  const port = Number(portText);
  const min = options.allowZero ? 0 : 1;
  if (port < min || port > 65535) throw new AddressError(`"${text}": port ${port} is out of range (${min}-65535)`);
  return { host, port };
}

/** `host:port`, with brackets around IPv6 hosts. */
export function formatHostPort({ host, port }: HostPort): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

/** True for 127.0.0.0/8, ::1 and localhost. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  const v4 = unmapIPv4(host);
  return net.isIPv4(v4) && v4.startsWith('127.');
}
