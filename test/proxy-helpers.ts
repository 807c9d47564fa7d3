// Helpers for the proxy integration tests: a running ProxyServer with its records, an HTTP origin,
// external clients (curl, ncat) run as child processes, and raw-socket utilities. Loopback only.
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { createProxyServer, type ProxyServer } from '../src/proxy/server.js';
import type { ProxyConnectionRecord, ProxyOptions } from '../src/proxy/options.js';
import { Arrivals, HOST, sha256, sleep, track, within } from './helpers.js';
import { expect } from 'vitest';

// ---------------------------------------------------------------------------
// The proxy under test

export interface RunningProxy {
  server: ProxyServer;
  port: number;
  /** One record per client connection, in the order they ended. */
  records: Arrivals<ProxyConnectionRecord>;
  /** The record of the connection whose client used this local port (raw sockets know it). */
  recordOf(clientPort: number, timeoutMs?: number): Promise<ProxyConnectionRecord>;
  close(): Promise<void>;
}

const running = new Set<RunningProxy>();

/** createProxyServer on 127.0.0.1:0 (unless `listen` is given), listening; closed by closeProxies(). */
export async function startProxy(options: Partial<ProxyOptions> = {}): Promise<RunningProxy> {
  const server = createProxyServer({ listen: [{ host: HOST, port: 0 }], ...options });
  const records = new Arrivals<ProxyConnectionRecord>();
  server.on('connection', (record) => records.push(record));
  const [address] = await server.listen();
  const proxy: RunningProxy = {
    server,
    port: address.port,
    records,
    recordOf: (clientPort, timeoutMs = 30_000) =>
      records.find((r) => r.client === `${HOST}:${clientPort}`, `the record of client port ${clientPort}`, timeoutMs),
    close: async () => {
      running.delete(proxy);
      await server.close(0);
    },
  };
  running.add(proxy);
  return proxy;
}

export async function closeProxies(): Promise<void> {
  await Promise.all([...running].map((proxy) => proxy.close()));
}

// ---------------------------------------------------------------------------
// Destinations

export interface Origin {
  port: number;
  body: Buffer;
  sha: string;
  close(): Promise<void>;
}

/** A node:http server on 127.0.0.1 answering every GET with the same random body. */
export async function startOrigin(size: number): Promise<Origin> {
  const body = randomBytes(size);
  const server = http.createServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length });
    res.end(body);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, () => resolve());
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    body,
    sha: sha256(body),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A port on 127.0.0.1 where nothing listens (bound once, then closed). */
export async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, HOST, () => resolve()));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Whether this host can listen on ::1 (no IPv6 in some containers). */
export async function canListenOnV6Loopback(): Promise<boolean> {
  const server = net.createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '::1', () => resolve());
    });
    await new Promise<void>((resolve) => server.close(() => resolve()));
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// External clients

export interface ToolResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

/** Spawns `cmd args` (no shell), feeds `input` to stdin (then closes it), collects everything; kills it after timeoutMs. */
export function runTool(cmd: string, args: string[], opts: { input?: Buffer; timeoutMs?: number } = {}): Promise<ToolResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return new Promise<ToolResult>((resolve, reject) => {
    // curl honours *_proxy / no_proxy from the environment: the tests name their proxy explicitly.
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/_proxy$/i.test(name)));
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.stdin.on('error', () => {}); // EPIPE if the tool exits before reading it all
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() });
    });
    child.stdin.end(opts.input ?? Buffer.alloc(0));
  });
}

// ---------------------------------------------------------------------------
// Raw sockets

/**
 * A raw client to 127.0.0.1:port (allowHalfOpen) that records everything it receives and how it
 * ended; for the exact bytes of a handshake reply.
 */
export interface RawClient {
  socket: net.Socket;
  localPort: number;
  /** Everything received so far. */
  received(): Buffer;
  /** Resolves once at least n bytes have arrived; rejects if the connection ends first. */
  waitBytes(n: number, timeoutMs?: number): Promise<Buffer>;
  /** Resolves when the server's FIN ('end') or the close arrives, whichever first, with how. */
  finished: Promise<'end' | 'close'>;
  /** 'end' was seen. */
  ended(): boolean;
}

export async function rawConnect(port: number, host = HOST): Promise<RawClient> {
  const socket = track(net.connect({ host, port, allowHalfOpen: true }));
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  const localPort = socket.localPort!;
  const parts: Buffer[] = [];
  let total = 0;
  let sawEnd = false;
  const waiters = new Set<() => void>();
  const wake = () => waiters.forEach((w) => w());
  socket.on('data', (chunk: Buffer) => {
    parts.push(chunk);
    total += chunk.length;
    wake();
  });
  const finished = new Promise<'end' | 'close'>((resolve) => {
    socket.once('end', () => {
      sawEnd = true;
      wake();
      resolve('end');
    });
    socket.once('close', () => {
      wake();
      resolve('close');
    });
  });
  const received = () => Buffer.concat(parts);
  const waitBytes = (n: number, timeoutMs = 10_000) =>
    within(
      new Promise<Buffer>((resolve, reject) => {
        const check = () => {
          if (total >= n) {
            waiters.delete(check);
            resolve(received().subarray(0, n));
          } else if (sawEnd || socket.destroyed) {
            waiters.delete(check);
            reject(new Error(`connection ended after ${total} of ${n} bytes: ${received().toString('hex')}`));
          }
        };
        waiters.add(check);
        check();
      }),
      timeoutMs,
      `${n} bytes from the proxy (got ${total})`,
    );
  return { socket, localPort, received, waitBytes, finished, ended: () => sawEnd };
}

/** Writes each chunk separately, `gapMs` apart (a handshake fed piecemeal). */
export async function writeSlowly(socket: net.Socket, data: Buffer, chunkSize = 1, gapMs = 2): Promise<void> {
  for (let i = 0; i < data.length; i += chunkSize) {
    socket.write(data.subarray(i, i + chunkSize));
    await sleep(gapMs);
  }
}

// ---------------------------------------------------------------------------
// Wire formats the tests write by hand

export function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

export function ipv4(text: string): Buffer {
  return Buffer.from(text.split('.').map(Number));
}

/** SOCKS5 CONNECT request `05 01 00 ATYP ADDR PORT` for an IPv4 literal or a domain name. */
export function socks5Connect(host: string, port: number, cmd = 0x01): Buffer {
  const addr = net.isIPv4(host) ? Buffer.concat([Buffer.of(0x01), ipv4(host)]) : Buffer.concat([Buffer.of(0x03, Buffer.byteLength(host)), Buffer.from(host)]);
  return Buffer.concat([Buffer.of(0x05, cmd, 0x00), addr, u16(port)]);
}

/** RFC 1929 `01 ULEN UNAME PLEN PASSWD`. */
export function socks5Auth(user: string, pass: string): Buffer {
  return Buffer.concat([Buffer.of(0x01, Buffer.byteLength(user)), Buffer.from(user), Buffer.of(Buffer.byteLength(pass)), Buffer.from(pass)]);
}

/** SOCKS4 CONNECT `04 01 PORT IP USERID 00`, or SOCKS4a with `host` a name (DSTIP 0.0.0.1). */
export function socks4Connect(host: string, port: number, userId = ''): Buffer {
  if (net.isIPv4(host)) return Buffer.concat([Buffer.of(0x04, 0x01), u16(port), ipv4(host), Buffer.from(userId), Buffer.of(0)]);
  return Buffer.concat([Buffer.of(0x04, 0x01), u16(port), Buffer.of(0, 0, 0, 1), Buffer.from(userId), Buffer.of(0), Buffer.from(host), Buffer.of(0)]);
}

export function httpConnect(host: string, port: number, headers: string[] = []): Buffer {
  const authority = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  return Buffer.from(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n`, 'latin1');
}

/** The 10-byte SOCKS5 failure reply: `05 REP 00 01 0.0.0.0 0`. */
export function socks5Failure(rep: number): Buffer {
  return Buffer.of(0x05, rep, 0x00, 0x01, 0, 0, 0, 0, 0, 0);
}

/** The 8-byte SOCKS4 reply `00 CD 0 0.0.0.0`. */
export function socks4Reply(cd: number): Buffer {
  return Buffer.of(0x00, cd, 0, 0, 0, 0, 0, 0);
}

export const HTTP_200_CONNECT = Buffer.from('HTTP/1.1 200 Connection Established\r\n\r\n', 'latin1');

/**
 * Sends `send`, expects exactly `expected` back and then the server's FIN (nothing more, nothing
 * less); then closes its own side. Returns the client (for its record).
 */
export async function expectReplyThenEnd(port: number, send: Buffer, expected: Buffer): Promise<RawClient> {
  const client = await rawConnect(port);
  client.socket.write(send);
  const how = await within(client.finished, 10_000, `the server to close after replying ${expected.toString('hex')}`);
  expect(client.received().toString('hex'), 'the whole reply, and nothing past it').toBe(expected.toString('hex'));
  expect(how, 'a FIN after the reply, not a reset').toBe('end');
  client.socket.end();
  return client;
}
