// Servers on 127.0.0.1 for tests: plain, echo, hashing, endless source, and the forwarder under test.
import net from 'node:net';
import tls from 'node:tls';
import { forward, type ForwardOptions, type ForwardResult } from '../../src/index.js';
import { Arrivals, track, within } from './cleanup.js';
import { hashUntilEnd, writeRandom, type Received, type Sent } from './data.js';
import { HOST, localPortOf, rememberPorts } from './sockets.js';

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
