// The tunnel client's way to the server: TCP, or TLS verified by a CA or pinned by the SHA-256
// fingerprint of the server's certificate (net/tls-dial.ts), with TLS sessions resumed.
import type { HostPort } from '../net/host-port.js';
import { TlsDialer, type ClientTlsOptions } from '../net/tls-dial.js';

export { certificateFingerprint, FingerprintError, parseFingerprint, type ClientTlsOptions } from '../net/tls-dial.js';

export class ServerDialer extends TlsDialer {
  constructor(server: HostPort, tlsOptions: ClientTlsOptions | undefined) {
    super(server, tlsOptions, 'the tunnel server');
  }

  /** The server's address. */
  get server(): HostPort {
    return this.address;
  }
}
