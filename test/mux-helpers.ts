// Mux sessions for tests: a client and a server session over a real TCP connection on 127.0.0.1,
// and seeded data written to and hashed from any Duplex (a mux stream is not a net.Socket).
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { createHash } from 'node:crypto';
import { createMuxSession, type MuxSession, type MuxSessionOptions } from '../src/index.js';
import { HOST, listen, onCleanup, PatternSource, prng, randomWriteSize, track, type Received, type Sent } from './helpers.js';

export interface SessionPair {
  client: MuxSession;
  server: MuxSession;
  clientSocket: net.Socket;
  serverSocket: net.Socket;
}

/** A TCP connection on 127.0.0.1 with a session on each end. */
export async function sessionPair(
  clientOptions: Omit<MuxSessionOptions, 'role'> = {},
  serverOptions: Omit<MuxSessionOptions, 'role'> = {},
): Promise<SessionPair> {
  let onAccepted!: (s: net.Socket) => void;
  const accepted = new Promise<net.Socket>((resolve) => (onAccepted = resolve));
  const port = await listen(net.createServer((s) => onAccepted(track(s))));
  const clientSocket = track(net.connect(port, HOST));
  await new Promise<void>((resolve, reject) => clientSocket.once('connect', resolve).once('error', reject));
  const serverSocket = await accepted;
  const client = createMuxSession(clientSocket, { role: 'client', ...clientOptions });
  const server = createMuxSession(serverSocket, { role: 'server', ...serverOptions });
  onCleanup(() => {
    client.destroy();
    server.destroy();
  });
  return { client, server, clientSocket, serverSocket };
}

/** Resolves on 'drain'; rejects when the stream closes or fails first. */
export function drained(stream: Duplex): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error) => {
      stream.off('drain', onDrain);
      stream.off('close', onClose);
      stream.off('error', done);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onClose = () => done(new Error('stream closed while writing'));
    stream.on('drain', onDrain);
    stream.on('close', onClose);
    stream.on('error', done);
  });
}

/** Writes `total` seeded bytes in random sizes with backpressure, then end()s unless `end: false`. */
export async function writePattern(stream: Duplex, seed: number, total: number, opts: { end?: boolean } = {}): Promise<Sent> {
  const src = new PatternSource(seed, total);
  const sizes = prng(seed ^ 0x5bd1e995);
  const hash = createHash('sha256');
  let bytes = 0;
  for (let chunk = src.next(randomWriteSize(sizes)); chunk; chunk = src.next(randomWriteSize(sizes))) {
    if (stream.destroyed) throw new Error(`stream destroyed after ${bytes} bytes written`);
    hash.update(chunk);
    bytes += chunk.length;
    if (!stream.write(chunk)) await drained(stream);
  }
  if (opts.end !== false) stream.end();
  return { bytes, sha: hash.digest('hex') };
}

/** Hashes what the stream delivers; resolves at 'end', rejects on 'error' or a close without 'end'. */
export function hashStream(stream: Duplex): Promise<Received> {
  const hash = createHash('sha256');
  let bytes = 0;
  const p = new Promise<Received>((resolve, reject) => {
    stream.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      hash.update(chunk);
    });
    stream.once('end', () => resolve({ bytes, sha: hash.digest('hex') }));
    stream.once('error', reject);
    stream.once('close', () => reject(new Error(`closed without 'end' after ${bytes} bytes`)));
  });
  p.catch(() => {});
  return p;
}

/** The error a stream fails with (rejects if it ends cleanly instead). */
export function streamError(stream: Duplex): Promise<NodeJS.ErrnoException> {
  const p = new Promise<NodeJS.ErrnoException>((resolve, reject) => {
    stream.once('error', resolve);
    stream.once('close', () => setImmediate(() => reject(new Error('closed without an error'))));
  });
  p.catch(() => {});
  return p;
}

/** Reads exactly `n` bytes and hashes them (SHA-256, hex); more than `n` is an overrun, named. */
export function hashBytes(stream: Duplex, n: number): Promise<string> {
  const hash = createHash('sha256');
  let got = 0;
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      hash.update(chunk);
      got += chunk.length;
      if (got >= n) {
        stream.off('data', onData);
        resolve(got === n ? hash.digest('hex') : `overrun: ${got} of ${n}`);
      }
    };
    stream.on('data', onData);
    stream.once('error', reject);
  });
}
