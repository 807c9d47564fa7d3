// The cases of bench/mux.js beyond one-stream bulk: many streams at once, a high round trip, and
// one stalled stream beside a busy one. Each takes a connected peer (ports of bench/mux.js --serve)
// and returns rows; all on 127.0.0.1, bounded in count and bytes. Also the certificate of the TLS rows.
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createMuxSession } from '../dist/index.js';
import { HOST, freePort, median, sleep, spawnChild, stopChild, waitListening } from './lib.js';
import { connect, download, stallAfter, sendHashed } from './mux-wire.js';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli', 'main.js');

/**
 * `count` streams opened at once on one warm session, each sending its own random `bytes` and
 * checking the receiver's SHA-256 of them. Throws on any mismatch: a bench that moves wrong bytes
 * measures nothing.
 */
export async function concurrentStreams(hashPort, { count, bytes, runs }) {
  const socket = await connect(hashPort);
  const session = createMuxSession(socket, { role: 'client', maxStreams: count + 1 });
  try {
    await sendHashed(session.openStream(), randomBytes(1024)); // warm
    const rows = [];
    for (let run = 0; run < runs; run++) {
      const payloads = Array.from({ length: count }, () => randomBytes(bytes));
      const t0 = process.hrtime.bigint();
      const results = await Promise.allSettled(payloads.map((p) => sendHashed(session.openStream(), p)));
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const failed = results.filter((r) => r.status === 'rejected');
      const mismatched = results.filter((r) => r.status === 'fulfilled' && r.value !== true).length;
      if (failed.length > 0 || mismatched > 0) {
        const why = failed[0]?.reason?.message ?? 'a SHA-256 differs from what was sent';
        throw new Error(`${count} concurrent streams: ${failed.length} failed, ${mismatched} mismatched (${why})`);
      }
      rows.push({ seconds, failed: failed.length, mismatched });
    }
    return { count, bytes, seconds: median(rows.map((r) => r.seconds)), failures: 0 };
  } finally {
    session.destroy();
  }
}

/**
 * One download through `splicer relay` with a latency toxic on both directions: plain TCP against
 * one mux stream per window size. The relay lets a latency toxic hold 32 MiB per direction, so a
 * TCP connection through it is not bound by its own window; a mux stream is bound by the window
 * its reader grants, window ÷ round trip.
 */
export async function highRtt(ports, { latencyMs, bytes, windows, runs }) {
  const tcpRelayPort = await freePort();
  const muxRelayPort = await freePort();
  const relay = spawnChild(process.execPath, [
    cli, 'relay',
    '--listen', `${HOST}:${tcpRelayPort}`, '--to', `${HOST}:${ports.tcpDownload}`,
    '--listen', `${HOST}:${muxRelayPort}`, '--to', `${HOST}:${ports.muxDownload}`,
    '--toxic', `latency@upstream:latency=${latencyMs}`,
    '--toxic', `latency@downstream:latency=${latencyMs}`,
  ]);
  try {
    for (const port of [tcpRelayPort, muxRelayPort]) await waitListening(port, relay, 15_000);
    const results = {};
    const record = (name, r) => (results[name] ??= []).push(r);
    const sessions = new Map();
    for (const window of windows) {
      const session = createMuxSession(await connect(muxRelayPort), { role: 'client', maxWindow: window });
      await session.ping(); // the round trip the window's growth reads
      sessions.set(window, session);
    }
    try {
      // Warm: the relay's JIT and its user-space path, the sessions' code; each new stream still
      // starts at 256 KiB and grows its window as it goes, which the timed downloads include.
      const warm = 16 * 1024 * 1024;
      await download(await connect(tcpRelayPort), warm);
      for (const session of sessions.values()) await download(session.openStream(), warm);
      for (let run = 0; run < runs; run++) {
        record('tcp', await download(await connect(tcpRelayPort), bytes));
        for (const [window, session] of sessions) record(`mux ${window / 1024 / 1024} MiB window`, await download(session.openStream(), bytes));
      }
    } finally {
      for (const session of sessions.values()) session.destroy();
    }
    const base = median(results.tcp.map((r) => r.mbps));
    const baseHalf = median(results.tcp.map((r) => r.secondHalfMbps));
    return Object.entries(results).map(([name, rs]) => {
      const mbps = median(rs.map((r) => r.mbps));
      const secondHalfMbps = median(rs.map((r) => r.secondHalfMbps));
      return { name, mbps, vsTcp: mbps / base, secondHalfMbps, secondHalfVsTcp: secondHalfMbps / baseHalf };
    });
  } finally {
    await stopChild(relay);
  }
}

/**
 * One session, two streams downloading. One reads its first 16 MiB (its window grows to the
 * maximum, as a busy stream's does) and then stops with `stalledBytes` more on their way; the
 * other's download of `bytes` is timed against the same download on the same session with no
 * stalled stream, alternating, medians of `runs`.
 */
export async function isolation(muxDownloadPort, { stalledBytes, bytes, runs }) {
  const session = createMuxSession(await connect(muxDownloadPort), { role: 'client' });
  const readFirst = 16 * 1024 * 1024;
  try {
    await download(session.openStream(), bytes); // warm: JIT, the window's growth
    const solo = [];
    const beside = [];
    let held = 0;
    for (let run = 0; run < runs; run++) {
      solo.push((await download(session.openStream(), bytes)).mbps);
      const stalled = session.openStream();
      await stallAfter(stalled, readFirst + stalledBytes, readFirst);
      await sleep(200); // what its window allows arrives and waits at the reader
      held = stalled.receiveBuffered;
      beside.push((await download(session.openStream(), bytes)).mbps);
      stalled.destroy();
    }
    return { solo: median(solo), beside: median(beside), ratio: median(beside) / median(solo), held };
  } finally {
    session.destroy();
  }
}

/** A self-signed certificate for 127.0.0.1 in `dir`, made with openssl; undefined without it. */
export function makeCertificate(dir) {
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
      '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'),
    ], { stdio: 'ignore' });
    return { key: path.join(dir, 'key.pem'), cert: path.join(dir, 'cert.pem') };
  } catch {
    return undefined;
  }
}
