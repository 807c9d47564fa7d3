// A PROXY protocol header (protocol/proxy-protocol.ts) on a net.Socket: read off the start of an
// accepted connection, with the bytes after it put back in the socket's stream; the client a
// header names; the header to send upstream for a connection.
import type net from 'node:net';
import { encodeProxyHeader, parseProxyHeader, type ProxyEndpoint, type ProxyHeader, type ProxyHeaderInput } from '../protocol/proxy-protocol.js';

export type ProxyProtocolVersion = 1 | 2;

/** Why no header was read: `ERR_PROXY_HEADER` (the reason in the message), ETIMEDOUT, ECONNRESET (the client left first). */
export class ProxyHeaderError extends Error {
  constructor(
    readonly code: 'ERR_PROXY_HEADER' | 'ETIMEDOUT' | 'ECONNRESET',
    message: string,
  ) {
    super(message);
    this.name = 'ProxyHeaderError';
  }
}

const EMPTY = Buffer.alloc(0);

/**
 * Reads the PROXY header at the start of `socket` (paused, or not yet read), within `timeoutMs`.
 * What came after the header is put back in front of the socket's stream, so whoever reads it
 * next (a forward() of either engine, a handshake) gets every byte the client sent. Rejects with
 * a ProxyHeaderError; the socket is the caller's to close either way.
 *
 * Read with read() on 'readable', not 'data': the rest is put back in the same tick as the read
 * that took it, before a FIN read with it could be emitted as 'end' (after which the stream
 * would refuse the unshift).
 */
export function readProxyHeader(socket: net.Socket, timeoutMs: number, signal?: AbortSignal): Promise<ProxyHeader> {
  return new Promise<ProxyHeader>((resolve, reject) => {
    let buffered: Buffer = EMPTY;
    const done = (err: ProxyHeaderError | null, header?: ProxyHeader) => {
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.off('error', onEnd);
      signal?.removeEventListener('abort', onEnd);
      if (err) reject(err);
      else resolve(header!);
    };
    const onReadable = () => {
      let chunk: Buffer | null;
      while ((chunk = socket.read() as Buffer | null) !== null) {
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
        const parsed = parseProxyHeader(buffered);
        if (parsed.status === 'incomplete') continue;
        if (parsed.status === 'error') return done(new ProxyHeaderError('ERR_PROXY_HEADER', parsed.message));
        const rest = buffered.subarray(parsed.consumed);
        if (rest.length > 0) socket.unshift(rest);
        return done(null, parsed.header);
      }
    };
    const onEnd = () => done(new ProxyHeaderError('ECONNRESET', 'the client closed before a whole PROXY header'));
    const timer = setTimeout(() => done(new ProxyHeaderError('ETIMEDOUT', `no PROXY header within ${timeoutMs} ms`)), timeoutMs);
    if (signal?.aborted) return onEnd();
    signal?.addEventListener('abort', onEnd, { once: true });
    socket.on('readable', onReadable);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
    socket.once('error', onEnd);
  });
}

/** The client a connection stands for: the header's source, or (LOCAL, UNKNOWN) the connection's own peer. */
export function clientOf(header: ProxyHeader | undefined, peer: ProxyEndpoint): ProxyEndpoint {
  return header?.command === 'proxy' ? header.source : peer;
}

/**
 * The header to send upstream for a connection from `peer` to `local` (the address it reached):
 * what an accepted header said when there was one naming a client, else the connection itself.
 */
export function headerToSend(version: ProxyProtocolVersion, accepted: ProxyHeader | undefined, peer: Partial<ProxyEndpoint>, local: Partial<ProxyEndpoint>): Buffer {
  let input: ProxyHeaderInput = null;
  if (accepted?.command === 'proxy') input = { source: accepted.source, destination: accepted.destination };
  else if (peer.address && local.address) {
    input = { source: { address: peer.address, port: peer.port ?? 0 }, destination: { address: local.address, port: local.port ?? 0 } };
  }
  return encodeProxyHeader(version, input);
}

/** `--send-proxy-protocol`'s values. */
export function parseProxyProtocolVersion(text: string): ProxyProtocolVersion {
  if (text === 'v1' || text === '1') return 1;
  if (text === 'v2' || text === '2') return 2;
  throw new TypeError(`PROXY protocol version must be v1 or v2, got ${JSON.stringify(text)}`);
}
