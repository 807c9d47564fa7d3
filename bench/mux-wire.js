// The little protocols bench/mux.js speaks over a TCP connection, a TLS connection or a mux stream,
// both ends of each: plain ESM JavaScript, no build step.
//
//   sink      8-byte length, that many bytes; answer: the 8-byte count once all arrived
//   hash      8-byte length, that many bytes; answer: their 32-byte SHA-256
//   download  8-byte length; answer: that many bytes, then the end
import { createHash } from 'node:crypto';
import net from 'node:net';
import { HOST } from './lib.js';

const FILL = Buffer.alloc(256 * 1024, 0x5a);

/** Collects the 8-byte length that starts every exchange; calls `onBody(length, rest)` once. */
function readLength(stream, onBody) {
  let head = Buffer.alloc(0);
  const onData = (chunk) => {
    head = Buffer.concat([head, chunk]);
    if (head.length < 8) return;
    stream.off('data', onData);
    onBody(Number(head.readBigUInt64BE(0)), head.subarray(8));
  };
  stream.on('data', onData);
  stream.on('error', () => {});
}

function lengthBuffer(n) {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

// ---- the receiving side's services ----

export function serveSink(stream) {
  readLength(stream, (total, first) => {
    let left = total - first.length;
    const done = () => stream.end(lengthBuffer(total));
    if (left === 0) return done();
    stream.on('data', (chunk) => {
      left -= chunk.length;
      if (left === 0) done();
    });
  });
}

export function serveHash(stream) {
  readLength(stream, (total, first) => {
    const hash = createHash('sha256').update(first);
    let left = total - first.length;
    const done = () => stream.end(hash.digest());
    if (left === 0) return done();
    stream.on('data', (chunk) => {
      hash.update(chunk);
      left -= chunk.length;
      if (left === 0) done();
    });
  });
}

export function serveDownload(stream) {
  readLength(stream, async (total) => {
    for (let left = total; left > 0; ) {
      const n = Math.min(left, FILL.length);
      left -= n;
      if (!stream.write(n === FILL.length ? FILL : FILL.subarray(0, n))) {
        const go = await drained(stream);
        if (!go) return;
      }
    }
    stream.end();
  });
}

// ---- the sending side ----

/** Resolves true on 'drain', false when the stream fails or closes first. */
export function drained(stream) {
  return new Promise((resolve) => {
    const done = (ok) => () => {
      stream.off('drain', onDrain);
      stream.off('close', onClose);
      resolve(ok);
    };
    const onDrain = done(true);
    const onClose = done(false);
    stream.on('drain', onDrain);
    stream.on('close', onClose);
  });
}

/** All the bytes `stream` sends until its end. */
function answerOf(stream) {
  return new Promise((resolve, reject) => {
    const parts = [];
    stream.on('data', (d) => parts.push(d));
    stream.once('end', () => resolve(Buffer.concat(parts)));
    stream.once('error', reject);
  });
}

async function writeAll(stream, chunks) {
  for (const chunk of chunks) {
    if (!stream.write(chunk) && !(await drained(stream))) throw new Error('the stream closed while sending');
  }
  stream.end();
}

function* filler(bytes) {
  for (let left = bytes; left > 0; ) {
    const n = Math.min(left, FILL.length);
    left -= n;
    yield n === FILL.length ? FILL : FILL.subarray(0, n);
  }
}

/** sink: sends `bytes` and resolves once the receiver counted them all. */
export async function sendSink(stream, bytes) {
  const answer = answerOf(stream);
  await writeAll(stream, [lengthBuffer(bytes), ...filler(bytes)]);
  const got = await answer;
  if (got.length !== 8 || Number(got.readBigUInt64BE(0)) !== bytes) throw new Error(`the receiver answered ${got.toString('hex')}, not ${bytes}`);
}

/** hash: sends `payload`; resolves with whether the receiver's SHA-256 is the payload's. */
export async function sendHashed(stream, payload) {
  const answer = answerOf(stream);
  await writeAll(stream, [lengthBuffer(payload.length), payload]);
  const got = await answer;
  return got.equals(createHash('sha256').update(payload).digest());
}

/**
 * download: asks for `bytes`, reads them all; resolves with the MB/s from the first byte to the
 * last (what the link sustains, without the one round trip of the request) and over the second
 * half of the bytes (once a window that grows as it goes has grown).
 */
export function download(stream, bytes) {
  return new Promise((resolve, reject) => {
    let got = 0;
    let firstAt;
    let halfAt;
    stream.on('data', (d) => {
      firstAt ??= process.hrtime.bigint();
      got += d.length;
      if (got >= bytes / 2) halfAt ??= { at: process.hrtime.bigint(), got };
    });
    stream.once('end', () => {
      if (got !== bytes) return reject(new Error(`downloaded ${got} bytes of ${bytes}`));
      const now = process.hrtime.bigint();
      resolve({
        mbps: bytes / (Number(now - firstAt) / 1e9) / 1e6,
        secondHalfMbps: (bytes - halfAt.got) / (Number(now - halfAt.at) / 1e9) / 1e6,
      });
    });
    stream.once('error', reject);
    stream.write(lengthBuffer(bytes));
  });
}

/**
 * Asks for `bytes`, reads the first `readFirst` of them (the window grows as a reader keeps up),
 * then stops reading: the stalled reader. Resolves when it stopped.
 */
export function stallAfter(stream, bytes, readFirst) {
  return new Promise((resolve, reject) => {
    let got = 0;
    const onData = (d) => {
      got += d.length;
      if (got < readFirst) return;
      stream.off('data', onData);
      stream.pause();
      resolve();
    };
    stream.on('data', onData);
    stream.once('error', reject);
    stream.write(lengthBuffer(bytes));
  });
}

export function connect(port, host = HOST) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, host);
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}
