// What a proxy's options expose: an open proxy refused (a listener beyond loopback that lets anyone
// in), the protection of the proxy's own host, and the combinations a server refuses to start with.
import { formatHostPort, isLoopback } from '../net/host-port.js';
import { hasClientAllowRule } from './rules.js';
import { formatMuxAddress } from './mux-address.js';
import type { ProxyOptions } from './options.js';

export class ExposureError extends Error {
  readonly code = 'ERR_OPEN_PROXY';
}

/**
 * Why these options would make an open proxy (a non-loopback listener that lets
 * anyone in), or null. `open: true` is the explicit override.
 */
export function openProxyRisk(options: ProxyOptions): string | null {
  if (options.open) return null;
  const exposed = [
    ...options.listen.filter((address) => !isLoopback(address.host)).map(formatHostPort),
    ...(options.muxListen ?? []).filter((address) => !isLoopback(address.host)).map(formatMuxAddress),
  ];
  if (exposed.length === 0) return null;
  if (options.credentials?.required) return null;
  if (hasClientAllowRule(options.rules ?? [])) return null;
  return (
    `listening on ${exposed.join(', ')} with no authentication and no client allow rule ` +
    'would make an open proxy that anyone can use; add --auth USER:PASS, --users FILE or --allow from=CIDR, or pass --open'
  );
}

/** Whether these options protect the host (ProxyOptions.protectHost): 'auto' means any listener beyond loopback. */
export function protectsHost(options: Pick<ProxyOptions, 'listen' | 'muxListen' | 'protectHost'>): boolean {
  const setting = options.protectHost ?? 'auto';
  if (setting !== 'auto') return setting;
  return [...options.listen, ...(options.muxListen ?? [])].some((address) => !isLoopback(address.host));
}

/** Throws on options a server cannot run with: no address, an open proxy, a combination refused. */
export function checkProxyOptions(options: ProxyOptions): void {
  const muxListen = options.muxListen ?? [];
  if (options.listen.length + muxListen.length === 0) throw new TypeError('at least one listen address is needed');
  // The header would name the client of the session's connection, not of a stream: not offered.
  if (options.acceptProxyProtocol && muxListen.length > 0) throw new TypeError('acceptProxyProtocol does not apply to mux listen addresses');
  if (muxListen.some((address) => address.tls) && !options.tls) throw new TypeError('mux+tls:// and tls:// listen addresses need tls (a certificate and key)');
  const risk = openProxyRisk(options);
  if (risk) throw new ExposureError(risk);
  if (![undefined, true, false, 'auto'].includes(options.protectHost)) {
    throw new TypeError(`protectHost must be true, false or 'auto', not ${JSON.stringify(options.protectHost)}`);
  }
}
