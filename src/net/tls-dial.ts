// A way to one address: TCP, or TLS verified by a CA (the system's by default) or pinned by the
// SHA-256 fingerprint of the peer's certificate (a self-signed certificate is then enough). The
// tunnel client dials its server with it, `forward` its tls:// and mux+tls:// upstreams.
import { timingSafeEqual, X509Certificate } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { DialError, whenConnected } from './connect.js';
import type { HostPort } from './host-port.js';

export interface ClientTlsOptions {
  /** PEM CA certificate(s) to verify the server's chain against (default: the system's). */
  ca?: string | Buffer;
  /** SHA-256 fingerprint of the server's certificate, hex with or without colons: pins it, no CA check. */
  fingerprint?: string;
  /** Name to verify the certificate for and to send as SNI (default: the server's host). */
  servername?: string;
}

export class FingerprintError extends Error {
  readonly code = 'ERR_TLS_FINGERPRINT';
}

/** A SHA-256 fingerprint as 32 bytes, from hex with or without ':' separators (openssl and Node print both). */
export function parseFingerprint(text: string): Buffer {
  const hex = text.trim().replace(/^sha256\s*(fingerprint)?\s*[=:]\s*/i, '').replace(/:/g, '');
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new FingerprintError(`"${text}" is not a SHA-256 fingerprint (64 hex digits, ':' separators allowed)`);
  return Buffer.from(hex, 'hex');
}

/** The SHA-256 fingerprint of a PEM certificate (the first in the file), as Node prints it: AB:CD:... */
export function certificateFingerprint(pem: string | Buffer): string {
  return new X509Certificate(pem).fingerprint256;
}

/**
 * Opens connections to one address. With TLS it keeps the last session ticket so that the next
 * connections resume instead of doing a full handshake; a resumed session is pinned like a new one.
 */
export class TlsDialer {
  readonly #address: HostPort;
  readonly #tls: ClientTlsOptions | undefined;
  readonly #pin: Buffer | undefined;
  /** What the peer is called in messages ("the tunnel server"). */
  readonly #peerName: string;
  #session: Buffer | undefined;

  constructor(address: HostPort, tlsOptions: ClientTlsOptions | undefined, peerName: string) {
    this.#address = address;
    this.#tls = tlsOptions;
    this.#pin = tlsOptions?.fingerprint ? parseFingerprint(tlsOptions.fingerprint) : undefined;
    this.#peerName = peerName;
  }

  get address(): HostPort {
    return this.#address;
  }

  get tls(): boolean {
    return this.#tls !== undefined;
  }

  /** Resolves once connected (and, with TLS, once the peer's certificate has been checked). */
  async dial(timeoutMs: number, signal?: AbortSignal): Promise<net.Socket> {
    const { host, port } = this.#address;
    const options = this.#tls;
    // Only a session from a connection that passed the checks below is kept for resumption.
    let verified = false;
    let ticket: Buffer | undefined;
    const connect = (): net.Socket => {
      if (!options) return net.connect({ host, port, allowHalfOpen: true, noDelay: true });
      const pinned = this.#pin !== undefined;
      // allowHalfOpen is passed on to the TLSSocket (lib/_tls_wrap.js), though @types/node omits it.
      const connectOptions: tls.ConnectionOptions & { allowHalfOpen: boolean } = {
        host,
        port,
        allowHalfOpen: true,
        servername: options.servername ?? (net.isIP(host) ? undefined : host),
        ca: options.ca,
        // A pinned certificate is checked below, against the fingerprint, instead of a CA.
        rejectUnauthorized: !pinned,
        session: this.#session,
      };
      if (options.servername && !pinned) connectOptions.checkServerIdentity = (_name, cert) => tls.checkServerIdentity(options.servername!, cert);
      const socket = tls.connect(connectOptions);
      socket.setNoDelay(true);
      socket.on('session', (session: Buffer) => {
        if (verified) this.#session = session;
        else ticket = session;
      });
      return socket;
    };
    const socket = await whenConnected(connect, {
      timeoutMs,
      signal,
      ready: options ? 'secureConnect' : 'connect',
      timedOut: () => new DialError('ETIMEDOUT', `connecting to ${this.#peerName} timed out after ${timeoutMs} ms`),
      aborted: () => new DialError('ABORT_ERR', 'aborted'),
      failed: (err) => {
        // A session the server no longer accepts would fail every later connection: drop it.
        this.#session = undefined;
        return new DialError(err.code ?? 'EIO', err.message);
      },
      check: (socket) => {
        // A resumed session was set up by a connection that passed the pin check (only such sessions
        // are kept), and only the server holding that session's secret can resume it (RFC 8446 2.2):
        // as good as seeing the pinned certificate again, which a resumed handshake does not carry.
        if (this.#pin && !(socket as tls.TLSSocket).isSessionReused()) {
          const cert = (socket as tls.TLSSocket).getPeerCertificate();
          const seen = cert?.fingerprint256 ? Buffer.from(cert.fingerprint256.replace(/:/g, ''), 'hex') : Buffer.alloc(0);
          if (seen.length !== this.#pin.length || !timingSafeEqual(seen, this.#pin)) {
            this.#session = undefined;
            return new DialError('ERR_TLS_FINGERPRINT', `${this.#peerName}'s certificate has fingerprint ${cert?.fingerprint256 ?? '(none)'}, not the pinned one`);
          }
        }
        verified = true;
        if (ticket) this.#session = ticket;
        return undefined;
      },
    });
    socket.on('error', () => {});
    return socket;
  }
}
