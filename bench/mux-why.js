// Where a Node receiver's CPU goes, for bench/mux.js --only why: the session's own work (frames
// parsed, payload routed to a stream, window updates) against what reading a TCP socket costs
// Node before the session sees a byte.
import { spawn } from 'node:child_process';
import net from 'node:net';
import { Duplex } from 'node:stream';
import { createMuxSession, yamuxFrame } from '../dist/index.js';
import { HOST, median } from './lib.js';

const CHUNK = 64 * 1024; // what one socket read hands to JavaScript

/** A connection that takes what is pushed into it and discards what is written. */
class FeedSocket extends Duplex {
  _read() {}
  _write(_chunk, _encoding, callback) {
    callback();
  }
  _writev(_chunks, callback) {
    callback();
  }
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

/**
 * User CPU seconds per GiB a session spends receiving one stream: 64 MiB of 64 KiB Data frames,
 * cut into 64 KiB reads and fed `replays` times, each read a fresh buffer as a socket's is; less
 * the same loop without the session (making the buffers). Min of 3 each.
 */
export async function sessionReceiveCost(replays = 8) {
  const socket = new FeedSocket();
  const session = createMuxSession(socket, { role: 'server', keepaliveInterval: 0 });
  let received = 0;
  session.on('stream', (stream) => stream.on('data', (d) => (received += d.length)));
  const frame = 64 * 1024;
  const frames = Math.floor((64 * 1024 * 1024) / (frame + 12));
  const region = Buffer.alloc(frames * (frame + 12), 0x5a);
  for (let i = 0; i < frames; i++) yamuxFrame.writeHeader(region, i * (frame + 12), yamuxFrame.FRAME_TYPE.DATA, 0, 1, frame);
  const reads = [];
  for (let at = 0; at < region.length; at += CHUNK) reads.push(region.subarray(at, Math.min(at + CHUNK, region.length)));
  socket.push(yamuxFrame.encodeHeader(yamuxFrame.FRAME_TYPE.WINDOW_UPDATE, yamuxFrame.FLAG.SYN, 1, 0));
  await tick();
  const run = async (feed) => {
    const c0 = process.cpuUsage();
    for (let r = 0; r < replays; r++) {
      for (let i = 0; i < reads.length; i++) {
        feed(Buffer.from(reads[i]));
        if ((i & 63) === 0) await tick();
      }
    }
    await tick();
    return process.cpuUsage(c0).user / 1e6;
  };
  const bare = [];
  const fed = [];
  for (let k = 0; k < 3; k++) {
    bare.push(await run(() => {}));
    fed.push(await run((b) => socket.push(b)));
  }
  session.destroy();
  const gib = (replays * frames * frame) / 1024 ** 3;
  if (received !== 3 * replays * frames * frame) throw new Error(`the session handed on ${received} bytes of ${3 * replays * frames * frame}`);
  return (Math.min(...fed) - Math.min(...bare)) / gib;
}

/**
 * CPU seconds (user, system) per GiB of a Node process receiving `mib` MiB over plain TCP on
 * 127.0.0.1: 'data' events (a fresh 64 KiB buffer per read, what every net.Socket does) against
 * `onread` into one reused 1 MiB buffer. Medians of `runs`, alternating.
 */
export async function socketReceiveCost(mib, runs) {
  const sender = spawn(process.execPath, ['--input-type=module', '-e', SENDER, String(mib)], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise((resolve, reject) => {
      sender.stdout.once('data', (d) => resolve(Number(String(d).trim())));
      sender.once('exit', (code) => reject(new Error(`the sender exited (${code})`)));
    });
    const receive = (mode) =>
      new Promise((resolve, reject) => {
        const c0 = process.cpuUsage();
        let got = 0;
        const options = { port, host: HOST };
        if (mode === 'onread') options.onread = { buffer: Buffer.allocUnsafe(1024 * 1024), callback: (n) => void (got += n) };
        const socket = net.connect(options);
        if (mode === 'data') socket.on('data', (d) => (got += d.length));
        socket.once('error', reject);
        socket.once('end', () => {
          const c = process.cpuUsage(c0);
          const gib = got / 1024 ** 3;
          if (got !== mib * 1024 * 1024) reject(new Error(`received ${got} bytes of ${mib} MiB`));
          resolve({ user: c.user / 1e6 / gib, system: c.system / 1e6 / gib });
        });
      });
    const results = { data: [], onread: [] };
    for (let run = 0; run < runs; run++) for (const mode of ['data', 'onread']) results[mode].push(await receive(mode));
    return Object.fromEntries(
      Object.entries(results).map(([mode, rs]) => [mode, { user: median(rs.map((r) => r.user)), system: median(rs.map((r) => r.system)) }]),
    );
  } finally {
    sender.kill();
  }
}

// Sends argv[1] MiB to every connection, in 256 KiB writes, then ends it.
const SENDER = `
import net from 'node:net';
const bytes = Number(process.argv[1]) * 1024 * 1024;
const chunk = Buffer.alloc(256 * 1024, 0x5a);
net.createServer((s) => {
  s.on('error', () => {});
  let left = bytes;
  const pump = () => {
    while (left > 0) {
      const n = Math.min(left, chunk.length);
      left -= n;
      if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return s.once('drain', pump);
    }
    s.end();
  };
  pump();
}).listen(0, '${HOST}', function () { console.log(this.address().port); });
`;
