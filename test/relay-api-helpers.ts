// Helpers for the relay control layer's tests: a fake data path that only records what it is told,
// an echo upstream, raw HTTP requests and a captured logger. Sockets are loopback only and tracked
// for closeAll().
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { formatHostPort } from '../src/net/host-port.js';
import type { Logger } from '../src/logger.js';
import type { Toxic } from '../src/relay/toxics.js';
import type { OpenRelayListener, RelayListener } from '../src/relay/listener.js';
import { HOST, track } from './helpers.js';

const names = (toxics: readonly Toxic[]) => toxics.map((t) => t.name).join(',');

/**
 * An OpenRelayListener that binds nothing: it writes each call as a line in `calls`
 * ("open a 127.0.0.1:0 -> 127.0.0.1:9 []", "toxics a [latency_downstream]", "close a"), resolves
 * port 0 to the next of 41000, 41001..., and refuses ports in `busy` as the kernel would.
 */
export function fakeDataPath() {
  const calls: string[] = [];
  const busy = new Set<number>();
  const live = new Map<string, FakeListener>();
  let nextPort = 41000;
  const open: OpenRelayListener = async (endpoint, toxics) => {
    calls.push(`open ${endpoint.name} ${formatHostPort(endpoint.listen)} -> ${formatHostPort(endpoint.upstream)} [${names(toxics)}]`);
    if (busy.has(endpoint.listen.port)) throw Object.assign(new Error(`listen EADDRINUSE: address already in use ${formatHostPort(endpoint.listen)}`), { code: 'EADDRINUSE' });
    const address = { host: endpoint.listen.host, port: endpoint.listen.port || nextPort++ };
    const listener: FakeListener = {
      address,
      toxics: [...toxics],
      setUpstream: (upstream) => void calls.push(`upstream ${endpoint.name} ${formatHostPort(upstream)}`),
      setToxics(list) {
        calls.push(`toxics ${endpoint.name} [${names(list)}]`);
        listener.toxics = [...list];
      },
      async close() {
        calls.push(`close ${endpoint.name}`);
        live.delete(endpoint.name);
      },
    };
    live.set(endpoint.name, listener);
    return listener;
  };
  return { open, calls, busy, live };
}

export interface FakeListener extends RelayListener {
  toxics: Toxic[];
}

/** An echo server on loopback; returns its port. */
export async function startEcho(): Promise<number> {
  const server = track(
    net.createServer({ allowHalfOpen: true }, (socket) => {
      track(socket).on('error', () => {});
      socket.pipe(socket);
    }),
  );
  await new Promise<void>((resolve) => server.listen(0, HOST, () => resolve()));
  return (server.address() as AddressInfo).port;
}

/** A loopback port that is bound (so listening there fails); closed by closeAll(). */
export async function busyPort(): Promise<number> {
  const server = track(net.createServer());
  await new Promise<void>((resolve) => server.listen(0, HOST, () => resolve()));
  return (server.address() as AddressInfo).port;
}

/**
 * A free port below the kernel's ephemeral range (32768 and up): a proxy disabled and enabled again
 * rebinds its port, and a port from that range may meanwhile be taken as the local port of some
 * outgoing connection.
 */
export async function quietPort(): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const probe = net.createServer();
    const free = await new Promise<boolean>((resolve) => {
      probe.once('error', () => resolve(false));
      probe.listen(port, HOST, () => resolve(true));
    });
    if (free) {
      await new Promise<void>((resolve) => probe.close(() => resolve()));
      return port;
    }
  }
}

export interface RawReply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: () => unknown;
}

/** One HTTP request with exactly the body and headers given (fetch would add its own). */
export function request(base: string, method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<RawReply> {
  return new Promise<RawReply>((resolve, reject) => {
    const req = http.request(`${base}${path}`, { method, headers, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: () => JSON.parse(text) });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A debug-level logger whose lines land in `lines`, parsed. */
export function captureLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'debug', base: undefined }, sink), lines };
}

/** Sends `text` and resolves with the echo once all of it is back; the socket stays open. */
export function roundTrip(socket: net.Socket, text: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let got = '';
    const onData = (chunk: Buffer) => {
      got += chunk.toString('utf8');
      if (got.length >= text.length) {
        socket.off('data', onData);
        socket.off('error', reject);
        resolve(got);
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write(text);
  });
}

export async function connect(port: number): Promise<net.Socket> {
  const socket = track(net.connect(port, HOST));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return socket;
}
