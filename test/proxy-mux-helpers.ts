// A proxy with mux listeners for tests, and the client side of a stream: a yamux session over a
// real TCP (or TLS) connection on 127.0.0.1, the npm `socks` client over a stream, and a byte
// reader for hand-written handshakes.
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { SocksClient } from 'socks';
import { createMuxSession, type MuxSession, type MuxStream } from '../src/index.js';
import { createProxyServer, type ProxyServer } from '../src/proxy/server.js';
import type { ProxyConnectionRecord, ProxyOptions } from '../src/proxy/options.js';
import { Arrivals, HOST, onCleanup, track, within } from './helpers.js';

export interface MuxProxy {
  server: ProxyServer;
  /** The first mux address's port. */
  muxPort: number;
  records: Arrivals<ProxyConnectionRecord>;
}

/** createProxyServer with `mux://127.0.0.1:0` (unless muxListen is given) and no plain listener; closed after the test. */
export async function startMuxProxy(options: Partial<ProxyOptions> = {}): Promise<MuxProxy> {
  const server = createProxyServer({ listen: [], muxListen: [{ host: HOST, port: 0, tls: false }], ...options });
  const records = new Arrivals<ProxyConnectionRecord>();
  server.on('connection', (record) => records.push(record));
  await server.listen();
  onCleanup(() => void server.close(0));
  return { server, muxPort: server.muxAddresses()[0]?.port ?? 0, records };
}

export interface MuxClient {
  session: MuxSession;
  socket: net.Socket;
  /** The client as the proxy sees it: the connection's local HOST:PORT. */
  peer: string;
}

/** A client session to `port`, over TLS when `ca` is given (the server's certificate, trusted). */
export async function muxClient(port: number, tlsOptions?: { ca: Buffer }): Promise<MuxClient> {
  const socket = track(
    tlsOptions ? tls.connect({ host: HOST, port, ca: tlsOptions.ca }) : net.connect({ host: HOST, port }),
  );
  await new Promise<void>((resolve, reject) => socket.once(tlsOptions ? 'secureConnect' : 'connect', resolve).once('error', reject));
  const session = createMuxSession(socket, { role: 'client' });
  session.on('error', () => {});
  onCleanup(() => session.destroy());
  return { session, socket, peer: `${HOST}:${socket.localPort}` };
}

/** A stream through which `socks` has made a SOCKS5 CONNECT to 127.0.0.1:destPort. */
export async function socks5Stream(client: MuxClient, destPort: number, auth?: { user: string; pass: string }): Promise<MuxStream> {
  const stream = client.session.openStream();
  await SocksClient.createConnection({
    proxy: { host: HOST, port: 1, type: 5, userId: auth?.user, password: auth?.pass },
    command: 'connect',
    destination: { host: HOST, port: destPort },
    existing_socket: stream,
    timeout: 10_000,
  });
  return stream;
}

/** What a stream has received, read by count or up to a marker: for handshakes written by hand. */
export class StreamBytes {
  #buffer = Buffer.alloc(0);
  #ended = false;
  #wake: (() => void) | undefined;

  constructor(readonly stream: Duplex) {
    stream.on('data', (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk]);
      this.#wake?.();
    });
    const end = () => {
      this.#ended = true;
      this.#wake?.();
    };
    stream.on('end', end);
    stream.on('close', end);
    stream.on('error', end);
  }

  /** The next `n` bytes; rejects if the stream ends first. */
  read(n: number, timeoutMs = 10_000): Promise<Buffer> {
    return this.#until(() => (this.#buffer.length >= n ? n : undefined), `${n} bytes`, timeoutMs);
  }

  /** Everything up to and including `marker`. */
  readThrough(marker: string, timeoutMs = 10_000): Promise<Buffer> {
    return this.#until(() => {
      const at = this.#buffer.indexOf(marker);
      return at < 0 ? undefined : at + marker.length;
    }, JSON.stringify(marker), timeoutMs);
  }

  /** Resolves once the stream has ended or closed, with what was left unread. */
  async rest(timeoutMs = 10_000): Promise<Buffer> {
    await this.#until(() => (this.#ended ? 0 : undefined), 'the end', timeoutMs);
    return this.#buffer;
  }

  async #until(ready: () => number | undefined, what: string, timeoutMs: number): Promise<Buffer> {
    const wait = async () => {
      for (;;) {
        const n = ready();
        if (n !== undefined) {
          const out = this.#buffer.subarray(0, n);
          this.#buffer = this.#buffer.subarray(n);
          return out;
        }
        if (this.#ended) throw new Error(`the stream ended before ${what}; got ${JSON.stringify(this.#buffer.toString('latin1'))}`);
        await new Promise<void>((resolve) => (this.#wake = resolve));
      }
    };
    return within(wait(), timeoutMs, what);
  }
}

/** Resolves once the stream has closed; true if it was reset (an error came first). */
export function streamClosed(stream: Duplex): Promise<{ reset: boolean }> {
  let reset = false;
  stream.on('error', () => (reset = true));
  return new Promise((resolve) => {
    if (stream.destroyed) resolve({ reset });
    else stream.once('close', () => resolve({ reset }));
  });
}
