// Test helpers: real sockets on 127.0.0.1 only. Everything a helper opens is registered
// with `track()` and closed by `closeAll()`, which every test file calls in afterEach.
import net from 'node:net';
import tls from 'node:tls';
import fs from 'node:fs';
import { createHash, type Hash } from 'node:crypto';
import { forward, type ForwardOptions, type ForwardResult } from '../src/index.js';

export const HOST = '127.0.0.1';
export const KiB = 1024;
export const MiB = 1024 * 1024;

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------
// Teardown registry

type Closable = net.Socket | net.Server;
const open = new Set<Closable>();
const cleanups = new Set<() => void>();

export function track<T extends Closable>(thing: T): T {
  open.add(thing);
  // A closed socket needs no teardown (keeps the set small in the 10,000-pair test).
  if (thing instanceof net.Socket) thing.once('close', () => open.delete(thing));
  return thing;
}

/** Runs `fn` in closeAll() (timers, intervals, engines...). */
export function onCleanup(fn: () => void): void {
  cleanups.add(fn);
}

/** Destroys every tracked socket, closes every tracked server, waits (bounded) for all to be closed. */
export async function closeAll(): Promise<void> {
  for (const fn of cleanups) {
    try {
      fn();
    } catch {
      // teardown goes on
    }
  }
  cleanups.clear();
  const waits: Promise<void>[] = [];
  for (const thing of open) {
    if (thing instanceof net.Server) {
      waits.push(new Promise<void>((resolve) => (thing.listening ? thing.close(() => resolve()) : resolve())));
    } else {
      thing.on('error', () => {});
      if (!thing.closed) {
        waits.push(new Promise<void>((resolve) => thing.once('close', () => resolve())));
        thing.destroy();
      }
    }
  }
  open.clear();
  await Promise.race([Promise.all(waits), sleep(10_000)]);
}

// ---------------------------------------------------------------------------
// A list whose entries can be awaited before they arrive.

export class Arrivals<T> {
  readonly items: T[] = [];
  private waiters: { pred: (x: T) => boolean; resolve: (x: T) => void }[] = [];

  push(item: T): void {
    this.items.push(item);
    this.waiters = this.waiters.filter((w) => {
      if (!w.pred(item)) return true;
      w.resolve(item);
      return false;
    });
  }

  /** The first item (present or future) matching pred. Rejects after timeoutMs. */
  find(pred: (x: T) => boolean, what = 'item', timeoutMs = 30_000): Promise<T> {
    const found = this.items.find(pred);
    if (found !== undefined) return Promise.resolve(found);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const waiter = {
        pred,
        resolve: (x: T) => {
          clearTimeout(timer);
          resolve(x);
        },
      };
      this.waiters.push(waiter);
    });
  }

  nth(n: number, what = `item #${n}`, timeoutMs = 30_000): Promise<T> {
    if (this.items.length > n) return Promise.resolve(this.items[n]);
    // pred runs after each push, so this resolves at the push that makes item n exist.
    return this.find(() => this.items.length > n, what, timeoutMs).then(() => this.items[n]);
  }
}

/** Rejects with a clear message if `p` takes longer than ms. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------
// Data: seeded, cheap to generate, random write sizes.

/** xorshift32: fast, seeded, good enough for sizes and test data. */
export function prng(seed: number): () => number {
  let x = (seed ^ 0x9e3779b9) >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

const BLOCK = (() => {
  const next = prng(12345);
  const block = Buffer.allocUnsafe(MiB);
  for (let i = 0; i < MiB; i += 4) block.writeUInt32LE(Math.floor(next() * 0x1_0000_0000), i);
  return block;
})();

/**
 * A byte stream of `total` bytes: 1 MiB segments, each the random block rotated by an offset that
 * depends on the seed and the segment number, with (seed, segment) stamped at its start, so a lost,
 * repeated or reordered segment changes the hash.
 */
export class PatternSource {
  private segment = Buffer.alloc(0);
  private segmentNo = -1;
  private pos = 0;
  private produced = 0;

  constructor(
    private readonly seed: number,
    readonly total: number,
  ) {}

  get remaining(): number {
    return this.total - this.produced;
  }

  /** Up to `max` bytes (a view into a fresh segment buffer: safe to hand to write()), or null at the end. */
  next(max: number): Buffer | null {
    if (this.remaining <= 0) return null;
    if (this.pos >= this.segment.length) this.newSegment();
    const n = Math.min(max, this.segment.length - this.pos, this.remaining);
    const chunk = this.segment.subarray(this.pos, this.pos + n);
    this.pos += n;
    this.produced += n;
    return chunk;
  }

  private newSegment(): void {
    this.segmentNo++;
    const rot = (Math.imul(this.seed + 1, 2654435761) + Math.imul(this.segmentNo, 40503)) >>> 0;
    const r = rot % MiB;
    const seg = Buffer.allocUnsafe(MiB);
    BLOCK.copy(seg, 0, r);
    BLOCK.copy(seg, MiB - r, 0, r);
    seg.writeUInt32LE(this.seed >>> 0, 0);
    seg.writeUInt32LE(this.segmentNo, 4);
    this.segment = seg;
    this.pos = 0;
  }
}

/** The whole stream a PatternSource(seed, total) produces, as one Buffer (for small sizes). */
export function patternBytes(seed: number, total: number): Buffer {
  const src = new PatternSource(seed, total);
  const parts: Buffer[] = [];
  for (let c = src.next(total); c; c = src.next(total)) parts.push(c);
  return Buffer.concat(parts);
}

export const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

/** Write sizes between 1 B and 256 KiB, log-uniform (many small writes, some large ones). */
export function randomWriteSize(next: () => number): number {
  return Math.max(1, Math.floor(Math.exp(next() * Math.log(256 * KiB + 1))));
}

export interface Sent {
  bytes: number;
  sha: string;
}

/** Resolves on 'drain'; rejects if the socket closes or errors first. */
function drained(socket: net.Socket): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error) => {
      socket.off('drain', onDrain);
      socket.off('close', onClose);
      socket.off('error', onError);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onClose = () => done(new Error('socket closed while writing'));
    const onError = (err: Error) => done(err);
    socket.on('drain', onDrain);
    socket.on('close', onClose);
    socket.on('error', onError);
  });
}

/**
 * Writes `total` bytes from PatternSource(seed) in random sizes (1 B .. 256 KiB), waiting for 'drain'
 * whenever write() says so; then end()s unless `end: false`. Returns what was written and its hash.
 * `stop()` in options ends the loop early (for endless sources).
 */
export async function writeRandom(
  socket: net.Socket,
  seed: number,
  total: number,
  opts: { end?: boolean; stop?: () => boolean; onWrite?: (n: number) => void } = {},
): Promise<Sent> {
  const src = new PatternSource(seed, total);
  const sizes = prng(seed ^ 0x5bd1e995);
  const hash = createHash('sha256');
  let bytes = 0;
  for (;;) {
    if (opts.stop?.()) break;
    if (socket.destroyed || socket.writableEnded) throw new Error('socket gone while writing');
    const chunk = src.next(randomWriteSize(sizes));
    if (!chunk) break;
    hash.update(chunk);
    bytes += chunk.length;
    opts.onWrite?.(chunk.length);
    if (!socket.write(chunk)) await drained(socket);
  }
  if (opts.end !== false) socket.end();
  return { bytes, sha: hash.digest('hex') };
}

/** Writes `data` in random slices (1 B .. 256 KiB), respecting backpressure; end()s unless `end: false`. */
export async function writeBuffer(socket: net.Socket, data: Buffer, opts: { end?: boolean; seed?: number } = {}): Promise<void> {
  const sizes = prng(opts.seed ?? data.length);
  for (let pos = 0; pos < data.length; ) {
    if (socket.destroyed || socket.writableEnded) throw new Error('socket gone while writing');
    const n = Math.min(randomWriteSize(sizes), data.length - pos);
    const ok = socket.write(data.subarray(pos, pos + n));
    pos += n;
    if (!ok) await drained(socket);
  }
  if (opts.end !== false) socket.end();
}

export interface Received {
  bytes: number;
  sha: string;
}

/**
 * A promise a test may await late (after other awaits that can throw): its rejection is marked
 * handled so a test that already failed does not also report an unhandled rejection.
 */
function awaitedLater<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

/** Hashes everything the socket delivers (resuming it); resolves at 'end', rejects on error or close without 'end'. */
export function hashUntilEnd(socket: net.Socket): Promise<Received> {
  const hash: Hash = createHash('sha256');
  let bytes = 0;
  const p = new Promise<Received>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      hash.update(chunk);
    });
    socket.once('end', () => resolve({ bytes, sha: hash.digest('hex') }));
    socket.once('error', (err) => reject(err));
    socket.once('close', () => reject(new Error(`closed without 'end' after ${bytes} bytes`)));
  });
  socket.resume(); // a 'data' listener does not restart a socket that was explicitly paused
  return awaitedLater(p);
}

/** Collects everything until 'end' (small transfers only), resuming the socket. */
export function collectUntilEnd(socket: net.Socket): Promise<Buffer> {
  const parts: Buffer[] = [];
  const p = new Promise<Buffer>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => parts.push(chunk));
    socket.once('end', () => resolve(Buffer.concat(parts)));
    socket.once('error', (err) => reject(err));
    socket.once('close', () => reject(new Error(`closed without 'end' after ${Buffer.concat(parts).length} bytes`)));
  });
  socket.resume();
  return awaitedLater(p);
}

/** Resolves once `n` bytes have arrived; returns them and leaves the socket paused (extra bytes unshifted). */
export function readBytes(socket: net.Socket, n: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let got = 0;
  return new Promise<Buffer>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      parts.push(chunk);
      got += chunk.length;
      if (got >= n) {
        cleanup();
        const all = Buffer.concat(parts);
        if (all.length > n) socket.unshift(all.subarray(n));
        resolve(all.subarray(0, n));
      }
    };
    const onEnd = () => {
      cleanup();
      reject(new Error(`'end' after ${got} of ${n} bytes`));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const cleanup = () => {
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', onError);
      socket.pause();
    };
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('error', onError);
    socket.resume();
  });
}

// ---------------------------------------------------------------------------
// What a peer observes

export interface Observed {
  /** 'end' was emitted (a FIN arrived and every byte before it was read). */
  ended: boolean;
  /** The code of the first 'error', if any. */
  errorCode?: string;
  hadError: boolean;
}

export interface Watch {
  readonly state: Observed;
  /** Resolves at 'close', with what was seen up to then. */
  closed: Promise<Observed>;
  /** Resolves at 'end'. */
  ended: Promise<void>;
  /**
   * Resolves at 'close' or 'end', whichever comes first, with what was seen: a peer that gets a FIN
   * where a reset was due ends (allowHalfOpen) without closing, and the test can say so.
   */
  finished: Promise<Observed>;
}

/** Records 'end', 'error' and 'close' on a socket (and keeps an 'error' listener on it). */
export function watch(socket: net.Socket): Watch {
  const state: Observed = { ended: false, hadError: false };
  socket.on('error', (err: NodeJS.ErrnoException) => {
    state.errorCode ??= err.code ?? err.message;
  });
  const ended = new Promise<void>((resolve) =>
    socket.once('end', () => {
      state.ended = true;
      resolve();
    }),
  );
  const closed = new Promise<Observed>((resolve) =>
    socket.once('close', (hadError: boolean) => {
      state.hadError = hadError;
      resolve({ ...state });
    }),
  );
  const finished = Promise.race([closed, ended.then(() => ({ ...state }))]);
  return { state, closed, ended, finished };
}

/** True when what the socket saw is a reset: an ECONNRESET/EPIPE error. */
export function sawReset(o: Observed): boolean {
  return o.errorCode === 'ECONNRESET' || o.errorCode === 'EPIPE';
}

const TCP_STATES: Record<string, string> = {
  '01': 'ESTABLISHED', '02': 'SYN_SENT', '03': 'SYN_RECV', '04': 'FIN_WAIT1', '05': 'FIN_WAIT2', '06': 'TIME_WAIT',
  '07': 'CLOSE', '08': 'CLOSE_WAIT', '09': 'LAST_ACK', '0A': 'LISTEN', '0B': 'CLOSING',
};

/**
 * The kernel state of the 127.0.0.1 TCP socket localPort -> remotePort (Linux /proc/net/tcp), or
 * undefined when the kernel no longer lists it (a socket that took a reset is unhashed at once).
 */
export function tcpState(localPort: number, remotePort: number): string | undefined {
  const hex = (port: number) => `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === hex(localPort) && f[2] === hex(remotePort)) return TCP_STATES[f[3]] ?? f[3];
  }
  return undefined;
}

/**
 * Whether a peer got a reset. Node shows a reset as an ECONNRESET 'error' only when the socket's
 * receive queue was empty: when data was still queued, libuv reads it and then reports EOF on the
 * EPOLLHUP instead of reading the error (uv__stream_io, the POLLHUP short-circuit), so the socket
 * emits 'end'. Then the kernel tells the two apart: after a FIN the socket sits in CLOSE_WAIT, after a
 * reset it is gone from /proc/net/tcp.
 */
export function peerSawReset(socket: net.Socket, o: Observed): boolean {
  if (sawReset(o)) return true;
  const ports = portsOf(socket);
  return o.ended && ports !== undefined && process.platform === 'linux' && tcpState(ports.local, ports.remote) !== 'CLOSE_WAIT';
}

// ---------------------------------------------------------------------------
// Clients and servers

// A socket's ports are gone once it is closed; tests look pairs up by them afterwards.
const socketPorts = new WeakMap<net.Socket, { local: number; remote: number }>();

function rememberPorts(socket: net.Socket): void {
  if (socket.localPort !== undefined && socket.remotePort !== undefined) {
    socketPorts.set(socket, { local: socket.localPort, remote: socket.remotePort });
  }
}

/** The local and remote port a connected socket had (still known after it closed). */
export function portsOf(socket: net.Socket): { local: number; remote: number } | undefined {
  return socketPorts.get(socket);
}

/** The local port a client had when it connected (still known after it closed). */
export function localPortOf(socket: net.Socket): number | undefined {
  return socketPorts.get(socket)?.local ?? socket.localPort;
}

/** A plain TCP client to 127.0.0.1:port, allowHalfOpen, connected. */
export async function connectTo(port: number): Promise<net.Socket> {
  const socket = track(net.connect({ host: HOST, port, allowHalfOpen: true }));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => {
      socket.off('error', reject);
      rememberPorts(socket);
      resolve();
    });
    socket.once('error', reject);
  });
  return socket;
}

export interface TestServer {
  server: net.Server;
  port: number;
  /** Accepted sockets in accept order. */
  conns: Arrivals<net.Socket>;
  close(): Promise<void>;
}

/** listen on 127.0.0.1:0; resolves with the port. */
export async function listen(server: net.Server, host = HOST): Promise<number> {
  track(server);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as net.AddressInfo).port;
}

/** A server (allowHalfOpen) calling `onConnection` for every accepted socket. */
export async function startServer(onConnection: (socket: net.Socket, index: number) => void = () => {}, host = HOST): Promise<TestServer> {
  const conns = new Arrivals<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    track(socket);
    rememberPorts(socket);
    socket.on('error', () => {});
    conns.push(socket);
    onConnection(socket, conns.items.length - 1);
  });
  const port = await listen(server, host);
  return { server, port, conns, close: () => closeServer(server) };
}

export function closeServer(server: net.Server): Promise<void> {
  return new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()));
}

/** Echoes everything back; ends its side after the client's FIN (and after echoing it all). */
export function startEchoServer(): Promise<TestServer> {
  return startServer((socket) => socket.pipe(socket));
}

export interface HashConn {
  socket: net.Socket;
  /** The peer's port (the forwarder's upstream socket's local port). */
  remotePort: number;
  received: Promise<Received>;
  /** What this connection sent back (resolves once it is all written and ended). */
  sent: Promise<Sent>;
}

export interface HashServer extends TestServer {
  records: Arrivals<HashConn>;
}

/**
 * Hashes everything it receives until FIN. Sends back `replyBytes(i)` pattern bytes (seed 1000 + i)
 * either at once (`when: 'connect'`) or after the client's FIN (`when: 'end'`), then ends.
 */
export async function startHashServer(opts: { replyBytes: number | ((i: number) => number); when: 'connect' | 'end' }): Promise<HashServer> {
  const records = new Arrivals<HashConn>();
  const srv = await startServer((socket, i) => {
    const n = typeof opts.replyBytes === 'number' ? opts.replyBytes : opts.replyBytes(i);
    const received = hashUntilEnd(socket);
    received.catch(() => {});
    const start = opts.when === 'connect' ? Promise.resolve() : received.then(() => undefined);
    const sent = start.then(() => writeRandom(socket, 1000 + i, n));
    sent.catch(() => {});
    records.push({ socket, remotePort: socket.remotePort!, received, sent });
  });
  return { ...srv, records };
}

/** Writes pattern bytes (seed 7 + i) as fast as the socket takes them, up to `maxBytes`, then ends. */
export async function startSourceServer(maxBytes: number): Promise<TestServer & { written: number[] }> {
  const written: number[] = [];
  const srv = await startServer((socket, i) => {
    written[i] = 0;
    socket.resume();
    writeRandom(socket, 7 + i, maxBytes, { onWrite: (n) => (written[i] += n) }).catch(() => {});
  });
  return { ...srv, written };
}

// ---------------------------------------------------------------------------
// The forwarder under test

export interface Outcome {
  result?: ForwardResult;
  error?: unknown;
}

export interface Pair {
  index: number;
  /** The accepted socket (side a) and the socket to the target (side b). */
  client: net.Socket;
  upstream: net.Socket;
  /** client.remotePort: the test client's local port. */
  clientPort: number;
  /** upstream.localPort: the target sees it as remotePort. */
  upstreamPort: number;
  /** Settles when forward() does; never rejects (see Outcome.error). */
  done: Promise<Outcome>;
  outcome?: Outcome;
}

export interface Forwarder {
  server: net.Server;
  port: number;
  pairs: Arrivals<Pair>;
  /** Finished pairs, in completion order. */
  results: ForwardResult[];
  /** The pair whose accepted socket belongs to the given test client. */
  pairOf(client: net.Socket): Promise<Pair>;
  /** The ForwardResult of the nth accepted pair; throws if forward() rejected. */
  result(n: number): Promise<ForwardResult>;
  /** The ForwardResult of the pair of this client; throws if forward() rejected. */
  resultOf(client: net.Socket): Promise<ForwardResult>;
  close(): Promise<void>;
}

export interface ForwarderHooks {
  /** Awaited after upstream 'connect' and before forward(). */
  beforeForward?: (client: net.Socket, upstream: net.Socket) => Promise<void> | void;
  /** Accept TLS instead of plain TCP (forward(tlsSocket, upstream)). */
  tls?: { key: string | Buffer; cert: string | Buffer };
}

/**
 * Listens on 127.0.0.1:0; for every accepted socket connects to 127.0.0.1:target.port (allowHalfOpen),
 * waits for 'connect', then calls forward(client, upstream, options) and records the outcome.
 */
export async function startForwarder(
  target: { port: number },
  options: ForwardOptions | ((index: number) => ForwardOptions),
  hooks: ForwarderHooks = {},
): Promise<Forwarder> {
  const pairs = new Arrivals<Pair>();
  const results: ForwardResult[] = [];
  let accepted = 0;

  const onClient = (client: net.Socket) => {
    track(client);
    // Until forward() takes over, an error here must not crash the test process.
    client.on('error', () => {});
    const index = accepted++;
    const clientPort = client.remotePort!;
    const upstream = track(net.connect({ host: HOST, port: target.port, allowHalfOpen: true }));
    upstream.on('error', () => {});
    upstream.once('connect', async () => {
      const opts = typeof options === 'function' ? options(index) : options;
      const pair: Pair = {
        index,
        client,
        upstream,
        clientPort,
        upstreamPort: upstream.localPort!,
        done: undefined as unknown as Promise<Outcome>,
      };
      pair.done = (async (): Promise<Outcome> => {
        try {
          await hooks.beforeForward?.(client, upstream);
          const result = await forward(client, upstream, opts);
          results.push(result);
          return { result };
        } catch (error) {
          client.destroy();
          upstream.destroy();
          return { error };
        }
      })().then((o) => (pair.outcome = o));
      pairs.push(pair);
    });
  };

  const server = hooks.tls
    ? tls.createServer({ key: hooks.tls.key, cert: hooks.tls.cert, allowHalfOpen: true }, onClient)
    : net.createServer({ allowHalfOpen: true }, onClient);
  server.on('tlsClientError', () => {});
  const port = await listen(server);

  const unwrap = async (pair: Pair): Promise<ForwardResult> => {
    const o = await within(pair.done, 60_000, `forward() of pair #${pair.index} to settle`);
    if (o.error !== undefined) throw o.error;
    return o.result!;
  };
  const pairOf = (client: net.Socket) => {
    const port = localPortOf(client);
    return pairs.find((p) => p.clientPort === port, `pair of client port ${port}`);
  };

  return {
    server,
    port,
    pairs,
    results,
    pairOf,
    result: async (n) => unwrap(await pairs.nth(n, `pair #${n}`)),
    resultOf: async (client) => unwrap(await pairOf(client)),
    close: () => closeServer(server),
  };
}

// ---------------------------------------------------------------------------
// Process

/** Open fds of this process (Linux). */
export function openFdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/** fd -> what it points at ('socket:[123]', 'pipe:[456]', a path...), for failure messages. */
export function fdTable(): Map<string, string> {
  const table = new Map<string, string>();
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      table.set(fd, fs.readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      // closed meanwhile (the readdir's own fd)
    }
  }
  return table;
}

/** The kinds of fds in `now` that were not in `before`, counted: { 'socket': 12, 'pipe': 2 }. */
export function fdDiff(before: Map<string, string>, now: Map<string, string>): Record<string, number> {
  const diff: Record<string, number> = {};
  for (const [fd, target] of now) {
    if (before.get(fd) === target) continue;
    const kind = target.replace(/:\[\d+\]$/, '').replace(/^anon_inode:/, '');
    diff[kind] = (diff[kind] ?? 0) + 1;
  }
  return diff;
}

/** Polls `fn` every 50 ms until it returns true or `ms` passes; returns the last value. */
export async function waitFor(fn: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (fn()) return true;
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
}
