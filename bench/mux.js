#!/usr/bin/env node
// The yamux layer (src/mux) against plain TCP and Go's hashicorp/yamux, on 127.0.0.1:
//
//   bulk   one stream: an 8-byte length, that many bytes, an 8-byte answer once all arrived; GB/s
//          and CPU seconds per GiB of both ends together (sender here, receiver in a child process)
//            tcp         plain TCP, Node on both ends (the baseline)
//            mux         a yamux stream over TCP, src/mux on both ends (4 MiB maximum window)
//            mux-go      src/mux sending to hashicorp/yamux (Go) receiving
//            go          hashicorp/yamux on both ends, its default 256 KiB window
//            go-4m       hashicorp/yamux on both ends, 4 MiB window (src/mux's maximum)
//   open   a new stream on a warm session (open, 1 byte there, 8 bytes back) vs a new TCP
//          connection doing the same; µs per exchange, sequential
//
// The Go cases need `go` and Debian's golang-github-hashicorp-yamux-dev; they are left out, saying
// so, when either is missing. Bounded: --mib (default 256) per bulk run, --runs (3), --opens (2000).
//
//   npm run bench:mux [-- --mib 256 --runs 3 --opens 2000]
//
// Run as `node bench/mux.js --serve`: the receiving side (prints "listening TCP_PORT MUX_PORT").
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createMuxSession } from '../dist/index.js';
import { cpuSeconds, installExitHandlers, median, spawnChild, stopChild, waitLine, which, HOST } from './lib.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    serve: { type: 'boolean', default: false },
    mib: { type: 'string', default: '256' },
    runs: { type: 'string', default: '3' },
    opens: { type: 'string', default: '2000' },
  },
});

// ---------------------------------------------------------------------------------------------
// The receiving side: per connection or stream, an 8-byte length, that many bytes, 8 bytes back.

function sink(stream) {
  let header = Buffer.alloc(0);
  let left = -1;
  let total = 0;
  stream.on('data', (chunk) => {
    if (left < 0) {
      header = Buffer.concat([header, chunk]);
      if (header.length < 8) return;
      left = Number(header.readBigUInt64BE(0));
      total = left;
      chunk = header.subarray(8);
    }
    left -= chunk.length;
    if (left === 0) {
      const answer = Buffer.alloc(8);
      answer.writeBigUInt64BE(BigInt(total));
      stream.end(answer);
    }
  });
  stream.on('error', () => {});
}

async function serve() {
  const listenOn = (server) => new Promise((resolve) => server.listen(0, HOST, () => resolve(server.address().port)));
  const tcpPort = await listenOn(net.createServer((socket) => sink(socket)));
  const muxPort = await listenOn(
    net.createServer((socket) => {
      socket.on('error', () => {});
      createMuxSession(socket, { role: 'server' }).on('stream', sink);
    }),
  );
  console.log(`listening ${tcpPort} ${muxPort}`);
}

if (args.serve) {
  await serve();
} else {
  await main();
}

// ---------------------------------------------------------------------------------------------
// The sending side.

function drained(stream) {
  return new Promise((resolve, reject) => {
    const done = (err) => {
      stream.off('drain', done);
      stream.off('error', done);
      if (err) reject(err);
      else resolve();
    };
    stream.on('drain', done);
    stream.on('error', done);
  });
}

/** Sends `bytes` through the protocol above and resolves once the answer came. */
async function send(stream, bytes) {
  const answer = new Promise((resolve, reject) => {
    const parts = [];
    stream.on('data', (d) => parts.push(d));
    stream.once('end', () => resolve(Buffer.concat(parts)));
    stream.once('error', reject);
  });
  const header = Buffer.alloc(8);
  header.writeBigUInt64BE(BigInt(bytes));
  stream.write(header);
  const chunk = Buffer.alloc(256 * 1024, 0x5a);
  for (let left = bytes; left > 0; ) {
    const n = Math.min(left, chunk.length);
    left -= n;
    if (!stream.write(n === chunk.length ? chunk : chunk.subarray(0, n))) await drained(stream);
  }
  stream.end();
  const got = await answer;
  if (got.length !== 8 || Number(got.readBigUInt64BE(0)) !== bytes) throw new Error(`the receiver answered ${got.toString('hex')}, not ${bytes}`);
}

function connect(port) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, HOST);
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

function cpuNow() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function timed(receiverPid, fn) {
  const cpu0 = cpuNow();
  const peer0 = cpuSeconds(receiverPid);
  const t0 = process.hrtime.bigint();
  await fn();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { seconds, cpu: cpuNow() - cpu0 + cpuSeconds(receiverPid) - peer0 };
}

function buildGoPeer() {
  const src = '/usr/share/gocode/src/github.com/hashicorp/yamux';
  if (!which('go')) return { reason: 'go is not installed' };
  if (!existsSync(src)) return { reason: `${src} is missing (golang-github-hashicorp-yamux-dev)` };
  const dir = mkdtempSync(path.join(os.tmpdir(), 'splicer-bench-yamux-'));
  const bin = path.join(dir, 'yamux-peer');
  execFileSync('go', ['build', '-o', bin, path.join(here, '..', 'test', 'peers', 'yamux-peer', 'main.go')], {
    env: { ...process.env, GO111MODULE: 'off', GOPATH: '/usr/share/gocode', GOPROXY: 'off', GOFLAGS: '' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return { bin, dir };
}

async function startGoSink(bin, window) {
  const child = spawnChild(bin, ['-window', String(window), 'sink-server']);
  const line = await waitLine(child, (l) => l.startsWith('listening '), 10_000, 'the Go sink listening');
  return { child, port: Number(line.split(' ')[1]) };
}

async function main() {
  installExitHandlers();
  const bytes = Number(args.mib) * 1024 * 1024;
  const runs = Number(args.runs);
  const opens = Number(args.opens);
  const receiver = spawnChild(process.execPath, [fileURLToPath(import.meta.url), '--serve']);
  const [, tcpPort, muxPort] = (await waitLine(receiver, (l) => l.startsWith('listening '), 10_000, 'the receiver listening')).split(' ').map(Number);
  const go = buildGoPeer();
  const results = {};
  const record = (name, r) => (results[name] ??= []).push(r);

  const muxSocket = await connect(muxPort);
  const session = createMuxSession(muxSocket, { role: 'client' });
  let goSink, goSink4m, goSession;
  if (go.bin) {
    goSink = await startGoSink(go.bin, 256 * 1024);
    goSink4m = await startGoSink(go.bin, 4 * 1024 * 1024);
    goSession = createMuxSession(await connect(goSink4m.port), { role: 'client' });
  } else {
    console.error(`Go cases left out: ${go.reason}`);
  }

  // Warm up every path (JIT, the windows' auto-tuning) before anything is timed.
  await send(await connect(tcpPort), 16 * 1024 * 1024);
  await send(session.openStream(), 16 * 1024 * 1024);
  if (goSession) await send(goSession.openStream(), 16 * 1024 * 1024);

  for (let run = 0; run < runs; run++) {
    record('tcp', await timed(receiver.pid, async () => send(await connect(tcpPort), bytes)));
    record('mux', await timed(receiver.pid, () => send(session.openStream(), bytes)));
    if (go.bin) {
      record('mux-go', await timed(goSink4m.child.pid, () => send(goSession.openStream(), bytes)));
      for (const [name, sinkProc, window] of [['go', goSink, 256 * 1024], ['go-4m', goSink4m, 4 * 1024 * 1024]]) {
        const peer0 = cpuSeconds(sinkProc.child.pid);
        const out = execFileSync(go.bin, ['-window', String(window), 'bulk-client', `${HOST}:${sinkProc.port}`, String(bytes)], { encoding: 'utf8' });
        const r = JSON.parse(out.trim());
        record(name, { seconds: r.seconds, cpu: r.cpu + cpuSeconds(sinkProc.child.pid) - peer0 });
      }
    }
  }

  // Stream open on a warm session against a TCP connect, sequential, each with a 1-byte exchange.
  const opensResult = {};
  for (const [name, open] of [
    ['tcp connect', () => connect(tcpPort)],
    ['mux stream', async () => session.openStream()],
  ]) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < opens; i++) await send(await open(), 1);
    opensResult[name] = Number(process.hrtime.bigint() - t0) / 1e3 / opens;
  }

  const gib = bytes / 1024 ** 3;
  const rows = Object.entries(results).map(([name, rs]) => ({
    name,
    gbps: median(rs.map((r) => bytes / r.seconds / 1e9)),
    cpuPerGib: median(rs.map((r) => r.cpu / gib)),
  }));
  const base = rows.find((r) => r.name === 'tcp');
  console.log(`\nbulk, one stream, ${args.mib} MiB × ${runs} runs (medians), CPU of both ends:`);
  console.log('| case | GB/s | CPU s per GiB | GB/s vs tcp | CPU vs tcp |');
  console.log('|---|---:|---:|---:|---:|');
  for (const r of rows) {
    console.log(`| ${r.name} | ${r.gbps.toFixed(2)} | ${r.cpuPerGib.toFixed(2)} | ${(r.gbps / base.gbps).toFixed(2)} | ${(r.cpuPerGib / base.cpuPerGib).toFixed(2)} |`);
  }
  console.log(`\nopen + 1-byte exchange, sequential, ${opens} each:`);
  console.log('| case | µs each | vs tcp connect |');
  console.log('|---|---:|---:|');
  for (const [name, us] of Object.entries(opensResult)) console.log(`| ${name} | ${us.toFixed(0)} | ${(us / opensResult['tcp connect']).toFixed(2)} |`);

  session.destroy();
  goSession?.destroy();
  await stopChild(receiver);
  if (goSink) await stopChild(goSink.child);
  if (goSink4m) await stopChild(goSink4m.child);
  if (go.dir) rmSync(go.dir, { recursive: true, force: true });
}
