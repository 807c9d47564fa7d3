// Helpers of the tunnel tests: a server and clients with short timeouts, closed in teardown; a raw
// protocol peer to send what a real client or server never would; a throwaway TLS certificate.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { HostPort } from '../src/net/host-port.js';
import {
  createTunnelClient,
  createTunnelServer,
  type ClientConnectionRecord,
  type ServerConnectionRecord,
  type TunnelClient,
  type TunnelClientOptions,
  type TunnelServer,
  type TunnelServerOptions,
} from '../src/index.js';
import {
  clientProof,
  dataMac,
  decodeMessage,
  encodeDataHello,
  encodeFrame,
  encodePreamble,
  parseConnectionStart,
  parseFrame,
  serverProof,
  sessionKey,
  type ControlMessage,
  type ParsedControlMessage,
} from '../src/tunnel/protocol.js';
import { readHeader } from '../src/tunnel/header.js';
import { Arrivals, HOST, track, within } from './helpers.js';

export const TOKEN = 'test-token-0123456789abcdef';

/** Timings short enough for tests: a dead peer is noticed in 0.6 s, a public client waits 1 s at most. */
export const QUICK_SERVER = {
  heartbeatInterval: 100,
  heartbeatTimeout: 600,
  handshakeTimeout: 1500,
  dataTimeout: 1000,
} satisfies Partial<TunnelServerOptions>;
export const QUICK_RECONNECT = { initialDelay: 50, maxDelay: 300, stableAfter: 500 };

const servers = new Set<TunnelServer>();
const clients = new Set<TunnelClient>();

/** Closes every server and client the helpers made (awaited; call before closeAll in afterEach). */
export async function closeTunnels(): Promise<void> {
  const closing = [...[...clients].map((c) => c.close()), ...[...servers].map((s) => s.close())];
  clients.clear();
  servers.clear();
  await within(Promise.all(closing), 10_000, 'tunnel servers and clients to close');
}

export interface TestServer {
  server: TunnelServer;
  address: HostPort;
  records: Arrivals<ServerConnectionRecord>;
}
/** Options every startServer() gets unless it says otherwise (a describe block's data path). */
export const serverDefaults: Partial<TunnelServerOptions> = {};


export async function startServer(options: Partial<TunnelServerOptions> = {}): Promise<TestServer> {
  const server = createTunnelServer({ listen: { host: HOST, port: 0 }, token: TOKEN, ...QUICK_SERVER, ...serverDefaults, ...options });
  servers.add(server);
  const records = new Arrivals<ServerConnectionRecord>();
  server.on('connectionClose', (r) => records.push(r));
  const address = await server.listen();
  return { server, address, records };
}

export interface TestClient {
  client: TunnelClient;
  records: Arrivals<ClientConnectionRecord>;
}

/** Options every startClient() gets unless it says otherwise (a describe block's data path). */
export const clientDefaults: Partial<TunnelClientOptions> = {};

/** A started client; `service` ports become tunnels named s0, s1, ... unless `tunnels` is given. */
export function startClient(server: HostPort, options: Partial<TunnelClientOptions> & { service?: number[] } = {}): TestClient {
  const { service = [], ...rest } = options;
  const client = createTunnelClient({
    server,
    token: TOKEN,
    tunnels: service.map((port, i) => ({ name: `s${i}`, local: { host: HOST, port } })),
    reconnect: QUICK_RECONNECT,
    ...clientDefaults,
    ...rest,
  });
  clients.add(client);
  const records = new Arrivals<ClientConnectionRecord>();
  client.on('connectionClose', (r) => records.push(r));
  client.start();
  return { client, records };
}

/** Stops tracking a client the test closes itself. */
export function forget(client: TunnelClient): void {
  clients.delete(client);
}

/** The public port of a client's tunnel, once it is up. */
export async function publicPort(client: TunnelClient, name = 's0', timeoutMs = 10_000): Promise<number> {
  const tunnels = await client.ready(timeoutMs);
  const tunnel = tunnels.find((t) => t.name === name);
  if (!tunnel?.remote) throw new Error(`tunnel ${name} is not up`);
  return tunnel.remote.port;
}

// ---------------------------------------------------------------------------------------------
// A raw peer: frames by hand.

export class RawPeer {
  readonly socket: net.Socket;
  readonly messages = new Arrivals<ParsedControlMessage>();
  /** Bytes that did not parse as frames (or came after a bad one). */
  raw = Buffer.alloc(0);
  readonly closed: Promise<void>;
  #buffer = Buffer.alloc(0);

  constructor(socket: net.Socket) {
    this.socket = track(socket);
    socket.on('error', () => {});
    // A FIN from the other side is answered with ours, so 'closed' comes.
    socket.on('end', () => socket.end());
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => {
      this.raw = Buffer.concat([this.raw, chunk]);
      this.#buffer = Buffer.concat([this.#buffer, chunk]);
      for (;;) {
        const frame = parseFrame(this.#buffer);
        if (frame.status !== 'ok') break;
        this.#buffer = this.#buffer.subarray(frame.consumed);
        const decoded = decodeMessage(frame.body);
        if (decoded.status === 'ok') this.messages.push(decoded.message);
      }
    });
    socket.resume();
  }

  static async connect(address: HostPort): Promise<RawPeer> {
    const socket = net.connect({ host: address.host, port: address.port, allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawPeer(socket);
  }

  send(message: ControlMessage): void {
    this.socket.write(encodeFrame(message));
  }

  next<T extends ParsedControlMessage['type']>(type: T, timeoutMs = 5000): Promise<Extract<ParsedControlMessage, { type: T }>> {
    return this.messages.find((m) => m.type === type, `a ${type} message`, timeoutMs) as Promise<Extract<ParsedControlMessage, { type: T }>>;
  }
}

export interface RawSession {
  peer: RawPeer;
  sessionId: Buffer;
  key: Buffer;
  /** Opens a data connection for request `id` (authenticated with the session key). */
  dataConnection(id: number): Promise<net.Socket>;
}

/** Logs in by hand (as `clientId`), optionally registering tunnels; answers no pings unless told to. */
export async function rawLogin(
  address: HostPort,
  options: { clientId?: string; token?: string; tunnels?: { name: string; port: number }[]; pool?: number; batch?: boolean; mux?: boolean } = {},
): Promise<RawSession> {
  const token = options.token ?? TOKEN;
  const clientId = options.clientId ?? 'raw-client';
  const peer = await RawPeer.connect(address);
  peer.socket.write(encodePreamble('control'));
  const clientNonce = randomBytes(32);
  peer.send({ type: 'hello', nonce: clientNonce.toString('base64'), clientId, pool: options.pool ?? 0, ...(options.batch ? { batch: true } : {}), ...(options.mux ? { mux: true } : {}) });
  const challenge = await peer.next('challenge');
  const serverNonce = Buffer.from(challenge.nonce, 'base64');
  peer.send({ type: 'auth', proof: clientProof(token, clientNonce, serverNonce, clientId).toString('base64') });
  const welcome = await peer.next('welcome');
  const sessionId = Buffer.from(welcome.sessionId, 'base64');
  if (!serverProof(token, clientNonce, serverNonce, sessionId).equals(Buffer.from(welcome.proof, 'base64'))) throw new Error('bad server proof');
  const key = sessionKey(token, clientNonce, serverNonce, sessionId);
  if (options.tunnels) {
    peer.send({ type: 'register', tunnels: options.tunnels });
    await peer.next('registered');
  }
  return {
    peer,
    sessionId,
    key,
    async dataConnection(id: number) {
      const socket = track(net.connect({ host: address.host, port: address.port, allowHalfOpen: true }));
      socket.on('error', () => {});
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
      socket.write(encodeDataHello(sessionId, id, dataMac(key, sessionId, id)));
      return socket;
    },
  };
}

/** Everything a socket receives until it closes (never rejects). */
export function received(socket: net.Socket): Promise<{ data: Buffer; error?: string }> {
  const parts: Buffer[] = [];
  let error: string | undefined;
  socket.on('data', (chunk: Buffer) => parts.push(chunk));
  socket.on('error', (err: NodeJS.ErrnoException) => (error ??= err.code));
  socket.on('end', () => socket.end());
  socket.resume();
  return new Promise((resolve) => socket.once('close', () => resolve({ data: Buffer.concat(parts), error })));
}

/**
 * How a public client's connection ended when it sent nothing: 'reset' (ECONNRESET/ECONNREFUSED),
 * 'eof' (a FIN), or 'timeout' when nothing happened within `ms` (a hung connection).
 */
export async function publicOutcome(port: number, ms = 5000): Promise<{ outcome: 'reset' | 'eof' | 'timeout'; code?: string; ms: number }> {
  const started = performance.now();
  const socket = track(net.connect({ host: HOST, port, allowHalfOpen: true }));
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ outcome: 'timeout', ms: performance.now() - started });
    }, ms);
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ outcome: 'reset', code: err.code, ms: performance.now() - started });
    });
    socket.on('end', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ outcome: 'eof', ms: performance.now() - started });
    });
    socket.resume();
  });
}

/**
 * A fake tunnel server that knows the token: it logs clients in properly (welcome with the given
 * heartbeat), answers `register` with every tunnel up, then hands the control peer to `onLogin`.
 * Data connections go to `onData` after their preamble and hello.
 */
export async function startFakeServer(handlers: {
  token?: string;
  heartbeat?: { interval: number; timeout: number };
  onLogin?: (peer: RawPeer, login: number) => void | Promise<void>;
  onData?: (socket: net.Socket) => void;
}): Promise<{ port: number; logins: () => number }> {
  let logins = 0;
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    track(socket);
    socket.on('error', () => {});
    void (async () => {
      const start = await readHeader(socket, parseConnectionStart);
      if (start.status !== 'ok') return socket.destroy();
      if (start.kind === 'data') return handlers.onData?.(socket);
      const peer = new RawPeer(socket);
      const hello = await peer.next('hello');
      const serverNonce = randomBytes(32);
      peer.send({ type: 'challenge', nonce: serverNonce.toString('base64') });
      await peer.next('auth');
      const sid = randomBytes(16);
      const proof = serverProof(handlers.token ?? TOKEN, Buffer.from(hello.nonce, 'base64'), serverNonce, sid);
      const { interval, timeout } = handlers.heartbeat ?? { interval: 1000, timeout: 5000 };
      peer.send({ type: 'welcome', sessionId: sid.toString('base64'), proof: proof.toString('base64'), heartbeatInterval: interval, heartbeatTimeout: timeout, pool: 0 });
      const register = await peer.next('register');
      peer.send({ type: 'registered', tunnels: register.tunnels.map((t) => ({ name: t.name, ok: true as const, host: '127.0.0.1', port: t.port || 1 })) });
      logins++;
      await handlers.onLogin?.(peer, logins);
    })().catch(() => socket.destroy());
  });
  track(server);
  const port = await new Promise<number>((resolve) => server.listen(0, HOST, () => resolve((server.address() as net.AddressInfo).port)));
  return { port, logins: () => logins };
}

// ---------------------------------------------------------------------------------------------

export interface TestCert {
  dir: string;
  certFile: string;
  keyFile: string;
  cert: Buffer;
  key: Buffer;
  /** As openssl prints it: AB:CD:... */
  fingerprint: string;
}

/** A throwaway self-signed certificate for CN/SAN tunnel.test and 127.0.0.1 (openssl req -x509). */
export function makeCert(cn = 'tunnel.test'): TestCert {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splicer-tunnel-tls-'));
  const certFile = path.join(dir, 'cert.pem');
  const keyFile = path.join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-keyout', keyFile, '-out', certFile, '-subj', `/CN=${cn}`, '-addext', `subjectAltName=DNS:${cn},IP:127.0.0.1`,
  ], { stdio: 'ignore' });
  const fingerprint = execFileSync('openssl', ['x509', '-in', certFile, '-noout', '-fingerprint', '-sha256'], { encoding: 'utf8' }).trim().split('=')[1];
  return { dir, certFile, keyFile, cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile), fingerprint };
}

export const hasOpenssl = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
