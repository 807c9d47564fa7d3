#!/usr/bin/env node
// The yamux layer (src/mux) against plain TCP and Go's hashicorp/yamux, on 127.0.0.1:
//
//   bulk   one stream: an 8-byte length, that many bytes, an 8-byte answer once all arrived; GB/s
//          and CPU seconds per GiB of both ends together (sender here, receiver in a child process)
//            tcp         plain TCP, Node on both ends (the baseline)
//            mux         a yamux stream over TCP, src/mux on both ends (4 MiB maximum window)
//            tls         plain TLS (node:tls, TLS 1.3), Node on both ends
//            mux+tls     a yamux stream over that TLS connection, src/mux on both ends
//            mux-go      src/mux sending to hashicorp/yamux (Go) receiving
//            go          hashicorp/yamux on both ends, its default 256 KiB window
//            go-4m       hashicorp/yamux on both ends, 4 MiB window (src/mux's maximum)
//   open   a new stream on a warm session (open, 1 byte there, 8 bytes back) vs a new TCP
//          connection doing the same; µs per exchange, sequential
//   streams  --streams (1000) streams opened at once on one session, each sending its own random
//          --stream-kib (64) KiB and checking the receiver's SHA-256; time, and an error on any mismatch
//   rtt    a download through `splicer relay` with a latency toxic of --rtt-ms (100) each way:
//          plain TCP against one mux stream per --rtt-windows (MiB) window; MB/s from first byte to
//          last, and over the second half (once a stream's window has grown); --rtt-mib (256) each
//   isolation  on one session, a stream that stops reading with --stall-mib (64) MiB on their way, beside
//          another stream's download of --iso-mib MiB; against that download alone on the same session
//          (--iso-runs, 7, alternating)
//   chain  one stream through two `splicer forward` processes, n:1 into a session and 1:n out of it
//          (mux://, mux+tls://), against the two forwarding plain TCP (splice engine, JS engine) and
//          two Go programs doing the same on hashicorp/yamux; GB/s and the forwarders' CPU s per GiB
//          (bench/mux-chain.js)
//   why    where a Node receiver's CPU goes: the session's own work per GiB (fed in-process, no
//          socket) against Node reading plain TCP, 'data' events vs `onread` into a reused buffer
//
// Both Node processes of the bench set the C allocator as the CLI does (src/cli/heap.ts: freed
// memory kept for reuse); MALLOC_TRIM_THRESHOLD_=131072 in the environment gives glibc's default.
//
// The Go cases need `go` and Debian's golang-github-hashicorp-yamux-dev, the TLS ones `openssl` (a
// self-signed certificate); each is left out, saying why, when what it needs is missing. Bounded:
// --mib (256) per bulk run, --runs (3), --opens (2000), the sizes above; --only picks cases.
//
//   npm run bench:mux [-- --mib 256 --runs 3 --only bulk,open,streams,rtt,isolation,chain,why]
//
// Run as `node bench/mux.js --serve`: the receiving side (prints "listening {ports as JSON}").
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { createMuxSession } from '../dist/index.js';
import { cpuSeconds, installExitHandlers, median, spawnChild, stopChild, waitLine, which, HOST } from './lib.js';
import { connect, sendSink, serveDownload, serveHash, serveSink } from './mux-wire.js';
import { concurrentStreams, highRtt, isolation, makeCertificate } from './mux-cases.js';
import { sessionReceiveCost, socketReceiveCost } from './mux-why.js';
import { chainBulk } from './mux-chain.js';
import { keepFreedMemoryForReuse } from '../dist/cli/heap.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const CASES = ['bulk', 'open', 'streams', 'rtt', 'isolation', 'chain', 'why'];
const { values: args } = parseArgs({
  options: {
    serve: { type: 'boolean', default: false },
    cert: { type: 'string' },
    key: { type: 'string' },
    only: { type: 'string', default: CASES.join(',') },
    mib: { type: 'string', default: '256' },
    runs: { type: 'string', default: '3' },
    opens: { type: 'string', default: '2000' },
    streams: { type: 'string', default: '1000' },
    'stream-kib': { type: 'string', default: '64' },
    'rtt-ms': { type: 'string', default: '100' },
    'rtt-mib': { type: 'string', default: '256' },
    'rtt-windows': { type: 'string', default: '4,16,64,128' },
    'stall-mib': { type: 'string', default: '64' },
    'iso-mib': { type: 'string', default: '64' },
    // More runs than the rest: one stalled stream changes the other's speed less than this VM's noise does.
    'iso-runs': { type: 'string', default: '7' },
  },
});

keepFreedMemoryForReuse();

// ---------------------------------------------------------------------------------------------
// The receiving side: the services of mux-wire.js on TCP, TLS and mux sessions over both.

async function serve() {
  const listenOn = (server) => new Promise((resolve) => server.listen(0, HOST, () => resolve(server.address().port)));
  const muxServer = (serveStream) => (socket) => {
    socket.on('error', () => {});
    // Room for --streams beyond the default limit of 1024: the client side sets the count.
    createMuxSession(socket, { role: 'server', maxStreams: 1 << 16 }).on('stream', serveStream);
  };
  const ports = {
    tcp: await listenOn(net.createServer(serveSink)),
    mux: await listenOn(net.createServer(muxServer(serveSink))),
    muxHash: await listenOn(net.createServer(muxServer(serveHash))),
    tcpDownload: await listenOn(net.createServer(serveDownload)),
    muxDownload: await listenOn(net.createServer(muxServer(serveDownload))),
  };
  if (args.cert && args.key) {
    const creds = { cert: readFileSync(args.cert), key: readFileSync(args.key) };
    ports.tls = await listenOn(tls.createServer(creds, serveSink));
    ports.muxTls = await listenOn(tls.createServer(creds, muxServer(serveSink)));
  }
  console.log(`listening ${JSON.stringify(ports)}`);
}

if (args.serve) {
  await serve();
} else {
  await main();
}

// ---------------------------------------------------------------------------------------------
// The sending side.

function connectTls(port, ca) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ port, host: HOST, ca });
    socket.once('secureConnect', () => resolve(socket));
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
  const only = new Set(args.only.split(','));
  for (const name of only) if (!CASES.includes(name)) throw new Error(`--only: unknown case ${name} (cases: ${CASES.join(', ')})`);
  const bytes = Number(args.mib) * 1024 * 1024;
  const runs = Number(args.runs);
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'splicer-bench-mux-'));
  const certificate = only.has('bulk') || only.has('chain') ? makeCertificate(tmp) : undefined;
  const serveArgs = certificate ? ['--cert', certificate.cert, '--key', certificate.key] : [];
  const receiver = spawnChild(process.execPath, [fileURLToPath(import.meta.url), '--serve', ...serveArgs]);
  const ports = JSON.parse((await waitLine(receiver, (l) => l.startsWith('listening '), 10_000, 'the receiver listening')).slice('listening '.length));
  const session = createMuxSession(await connect(ports.mux), { role: 'client' });
  const report = [];
  try {
    if (only.has('bulk')) report.push(...(await bulk(ports, session, receiver, bytes, runs, certificate)));
    if (only.has('open')) report.push(...(await opens(ports, session, Number(args.opens))));
    if (only.has('streams')) {
      const r = await concurrentStreams(ports.muxHash, { count: Number(args.streams), bytes: Number(args['stream-kib']) * 1024, runs });
      report.push(
        `\n${r.count} streams opened at once on one warm session, ${r.bytes / 1024} KiB each, SHA-256 checked by the receiver (median of ${runs}):`,
        '| streams | MiB in all | seconds | MB/s | failures |',
        '|---:|---:|---:|---:|---:|',
        `| ${r.count} | ${((r.count * r.bytes) / 1024 / 1024).toFixed(0)} | ${r.seconds.toFixed(2)} | ${((r.count * r.bytes) / r.seconds / 1e6).toFixed(0)} | ${r.failures} |`,
      );
    }
    if (only.has('rtt')) {
      const latencyMs = Number(args['rtt-ms']);
      const rows = await highRtt(ports, {
        latencyMs,
        bytes: Number(args['rtt-mib']) * 1024 * 1024,
        windows: args['rtt-windows'].split(',').map((m) => Number(m) * 1024 * 1024),
        runs,
      });
      report.push(
        `\none download of ${args['rtt-mib']} MiB through splicer relay, latency toxic ${latencyMs} ms each way, MB/s first byte to last (median of ${runs}):`,
        '| case | MB/s | vs tcp | MB/s, second half | vs tcp | window ÷ round trip, MB/s |',
        '|---|---:|---:|---:|---:|---:|',
        ...rows.map((r) => {
          const window = /^mux (\d+) MiB/.exec(r.name)?.[1];
          const bound = window ? ((Number(window) * 1024 * 1024) / (2 * latencyMs / 1000) / 1e6).toFixed(0) : '';
          return `| ${r.name} | ${r.mbps.toFixed(0)} | ${r.vsTcp.toFixed(2)} | ${r.secondHalfMbps.toFixed(0)} | ${r.secondHalfVsTcp.toFixed(2)} | ${bound} |`;
        }),
      );
    }
    if (only.has('isolation')) {
      const r = await isolation(ports.muxDownload, { stalledBytes: Number(args['stall-mib']) * 1024 * 1024, bytes: Number(args['iso-mib']) * 1024 * 1024, runs: Number(args['iso-runs']) });
      report.push(
        `\nisolation: a ${args['iso-mib']} MiB download on one session, alone and beside a stream that stopped reading with ${args['stall-mib']} MiB to come (median of ${args['iso-runs']}):`,
        '| case | MB/s | vs alone |',
        '|---|---:|---:|',
        `| alone | ${r.solo.toFixed(0)} | 1.00 |`,
        `| beside the stalled stream | ${r.beside.toFixed(0)} | ${r.ratio.toFixed(2)} |`,
        `(the stalled stream held ${(r.held / 1024 / 1024).toFixed(1)} MiB unread at its reader, its window; the rest of ${args['stall-mib']} MiB waited at the sender)`,
      );
    }
    if (only.has('chain')) {
      const go = buildGoPeer();
      try {
        if (!go.bin) report.push(`\nthe Go chain is left out: ${go.reason}`);
        report.push(...(await chainBulk(ports.tcp, { bytes, runs, certificate, goBin: go.bin })));
      } finally {
        if (go.dir) rmSync(go.dir, { recursive: true, force: true });
      }
    }
    if (only.has('why')) {
      const sessionCost = await sessionReceiveCost();
      const socketCost = await socketReceiveCost(Number(args.mib), runs);
      const perGib = (c) => c.user + c.system;
      report.push(
        `\nwhere a Node receiver's CPU goes, s per GiB (socket rows: ${args.mib} MiB, median of ${runs}):`,
        '| what | user | system | total | vs socket reads |',
        '|---|---:|---:|---:|---:|',
        `| src/mux session receiving one stream (in-process, no socket) | ${sessionCost.toFixed(2)} | | ${sessionCost.toFixed(2)} | ${(sessionCost / perGib(socketCost.data)).toFixed(2)} |`,
        `| Node reading TCP: 'data' events, a new 64 KiB buffer per read | ${socketCost.data.user.toFixed(2)} | ${socketCost.data.system.toFixed(2)} | ${perGib(socketCost.data).toFixed(2)} | 1.00 |`,
        `| Node reading TCP: onread into one reused 1 MiB buffer | ${socketCost.onread.user.toFixed(2)} | ${socketCost.onread.system.toFixed(2)} | ${perGib(socketCost.onread).toFixed(2)} | ${(perGib(socketCost.onread) / perGib(socketCost.data)).toFixed(2)} |`,
      );
    }
  } finally {
    session.destroy();
    await stopChild(receiver);
    rmSync(tmp, { recursive: true, force: true });
  }
  console.log(report.join('\n'));
}

async function bulk(ports, session, receiver, bytes, runs, certificate) {
  const go = buildGoPeer();
  const results = {};
  const record = (name, r) => (results[name] ??= []).push(r);
  const notes = [];
  let goSink, goSink4m, goSession, tlsSession;
  const ca = certificate && readFileSync(certificate.cert);
  try {
    if (go.bin) {
      goSink = await startGoSink(go.bin, 256 * 1024);
      goSink4m = await startGoSink(go.bin, 4 * 1024 * 1024);
      goSession = createMuxSession(await connect(goSink4m.port), { role: 'client' });
    } else {
      notes.push(`Go cases left out: ${go.reason}`);
    }
    if (ca) tlsSession = createMuxSession(await connectTls(ports.muxTls, ca), { role: 'client' });
    else notes.push('TLS cases left out: openssl could not make a certificate');

    // Warm up every path (JIT, the windows' auto-tuning) before anything is timed.
    const warm = 16 * 1024 * 1024;
    await sendSink(await connect(ports.tcp), warm);
    await sendSink(session.openStream(), warm);
    if (goSession) await sendSink(goSession.openStream(), warm);
    if (tlsSession) {
      await sendSink(await connectTls(ports.tls, ca), warm);
      await sendSink(tlsSession.openStream(), warm);
    }

    for (let run = 0; run < runs; run++) {
      record('tcp', await timed(receiver.pid, async () => sendSink(await connect(ports.tcp), bytes)));
      record('mux', await timed(receiver.pid, () => sendSink(session.openStream(), bytes)));
      if (tlsSession) {
        record('tls', await timed(receiver.pid, async () => sendSink(await connectTls(ports.tls, ca), bytes)));
        record('mux+tls', await timed(receiver.pid, () => sendSink(tlsSession.openStream(), bytes)));
      }
      if (go.bin) {
        record('mux-go', await timed(goSink4m.child.pid, () => sendSink(goSession.openStream(), bytes)));
        for (const [name, sinkProc, window] of [['go', goSink, 256 * 1024], ['go-4m', goSink4m, 4 * 1024 * 1024]]) {
          const peer0 = cpuSeconds(sinkProc.child.pid);
          const out = execFileSync(go.bin, ['-window', String(window), 'bulk-client', `${HOST}:${sinkProc.port}`, String(bytes)], { encoding: 'utf8' });
          const r = JSON.parse(out.trim());
          record(name, { seconds: r.seconds, cpu: r.cpu + cpuSeconds(sinkProc.child.pid) - peer0 });
        }
      }
    }
  } finally {
    goSession?.destroy();
    tlsSession?.destroy();
    if (goSink) await stopChild(goSink.child);
    if (goSink4m) await stopChild(goSink4m.child);
    if (go.dir) rmSync(go.dir, { recursive: true, force: true });
  }

  const gib = bytes / 1024 ** 3;
  const rows = Object.entries(results).map(([name, rs]) => ({
    name,
    gbps: median(rs.map((r) => bytes / r.seconds / 1e9)),
    cpuPerGib: median(rs.map((r) => r.cpu / gib)),
  }));
  const base = rows.find((r) => r.name === 'tcp');
  const goRow = rows.find((r) => r.name === 'go');
  return [
    ...notes,
    `\nbulk, one stream, ${args.mib} MiB × ${runs} runs (medians), CPU of both ends:`,
    `| case | GB/s | CPU s per GiB | GB/s vs tcp | CPU vs tcp |${goRow ? ' GB/s vs go | CPU vs go |' : ''}`,
    `|---|---:|---:|---:|---:|${goRow ? '---:|---:|' : ''}`,
    ...rows.map(
      (r) =>
        `| ${r.name} | ${r.gbps.toFixed(2)} | ${r.cpuPerGib.toFixed(2)} | ${(r.gbps / base.gbps).toFixed(2)} | ${(r.cpuPerGib / base.cpuPerGib).toFixed(2)} |` +
        (goRow ? ` ${(r.gbps / goRow.gbps).toFixed(2)} | ${(r.cpuPerGib / goRow.cpuPerGib).toFixed(2)} |` : ''),
    ),
  ];
}

/** Stream open on a warm session against a TCP connect, sequential, each with a 1-byte exchange. */
async function opens(ports, session, count) {
  const result = {};
  for (const [name, open] of [
    ['tcp connect', () => connect(ports.tcp)],
    ['mux stream', async () => session.openStream()],
  ]) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < count; i++) await sendSink(await open(), 1);
    result[name] = Number(process.hrtime.bigint() - t0) / 1e3 / count;
  }
  return [
    `\nopen + 1-byte exchange, sequential, ${count} each:`,
    '| case | µs each | vs tcp connect |',
    '|---|---:|---:|',
    ...Object.entries(result).map(([name, us]) => `| ${name} | ${us.toFixed(0)} | ${(us / result['tcp connect']).toFixed(2)} |`),
  ];
}
