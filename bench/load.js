// Sender and receiver of the throughput benchmark, in one child process of its own so that their
// CPU time is never counted as the forwarder's.
//
// Protocol (one JSON object per line):
//   stdout  {"type":"ready","port":R}            receiver listening on 127.0.0.1:R
//   stdin   {"cmd":"run","port":P,"streams":S,"bytes":B}
//           the sender opens S connections to 127.0.0.1:P (a forwarder, or R itself for `direct`)
//           and writes B bytes in total, split across them, then end()s each one
//   stdout  {"type":"result","ok":bool,"bytes":n,"expected":B,"seconds":s,"error"?:string}
//           seconds: from the first connect() to the last byte received (all S connections ended)
// The process exits when stdin closes, so it never outlives the benchmark.
//
// `--threads 2` (the default) runs the sender on a worker thread of this same process and the
// receiver on the main thread: a single Node thread doing both tops out well below loopback speed
// and would hide the differences between forwarders. `--threads 1` keeps both on one thread.
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import readline from 'node:readline';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { parseArgs } from 'node:util';

const HOST = '127.0.0.1';
const CHUNK = randomBytes(1 << 20); // preallocated random 1 MiB, written over and over

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

/** The transfer in progress, if any: receiver-side accounting. */
let current = null;

const receiver = net.createServer({ allowHalfOpen: false }, (sock) => {
  const t = current;
  if (!t) {
    // A connection outside a transfer: count nothing, but note it.
    sock.destroy();
    process.stderr.write('load: stray connection outside a transfer\n');
    return;
  }
  t.accepted++;
  sock.on('data', (d) => {
    t.received += d.length;
  });
  sock.on('end', () => {
    t.ended++;
    if (t.ended === t.streams) t.finish();
  });
  sock.on('error', (err) => t.fail(`receiver: ${err.code || err.message}`));
});

function runTransfer({ port, streams, bytes }) {
  return new Promise((resolve) => {
    const t = {
      streams,
      expected: bytes,
      received: 0,
      accepted: 0,
      ended: 0,
      done: false,
      t0: 0n,
      finish() {
        if (t.done) return;
        t.done = true;
        const seconds = Number(process.hrtime.bigint() - t.t0) / 1e9;
        current = null;
        const ok = t.received === t.expected;
        resolve({
          type: 'result',
          ok,
          bytes: t.received,
          expected: t.expected,
          seconds,
          ...(ok ? {} : { error: `received ${t.received} bytes, expected ${t.expected}` }),
        });
      },
      fail(msg) {
        if (t.done) return;
        t.done = true;
        current = null;
        resolve({ type: 'result', ok: false, bytes: t.received, expected: t.expected, seconds: null, error: msg });
      },
    };
    current = t;

    t.t0 = process.hrtime.bigint();
    if (senderWorker) {
      senderWorker.postMessage({ port, streams, bytes });
    } else {
      startSenders(port, streams, bytes, (msg) => t.fail(msg));
    }
  });
}

function startSenders(port, streams, bytes, onError) {
  const base = Math.floor(bytes / streams);
  for (let i = 0; i < streams; i++) {
    const share = i === streams - 1 ? bytes - base * (streams - 1) : base;
    startSender(port, share, onError);
  }
}

function startSender(port, share, onError) {
  let remaining = share;
  const sock = net.connect({ host: HOST, port, allowHalfOpen: false });
  // Respect backpressure: write until write() says the buffer is full, resume on 'drain'.
  const pump = () => {
    while (remaining > 0) {
      const n = Math.min(remaining, CHUNK.length);
      remaining -= n;
      const more = sock.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n));
      if (!more) {
        sock.once('drain', pump);
        return;
      }
    }
    sock.end();
  };
  sock.once('connect', pump);
  sock.on('data', () => { /* nothing comes back; drain it anyway */ });
  sock.on('error', (err) => onError(`sender: ${err.code || err.message}`));
}

let senderWorker = null;

if (!isMainThread && workerData && workerData.role === 'sender') {
  // Sender thread: one transfer per message; errors go back to the main thread.
  parentPort.on('message', ({ port, streams, bytes }) => {
    startSenders(port, streams, bytes, (msg) => parentPort.postMessage({ error: msg }));
  });
} else {
  const { values } = parseArgs({ options: { threads: { type: 'string', default: '2' } } });
  if (values.threads === '2') {
    senderWorker = new Worker(new URL(import.meta.url), { workerData: { role: 'sender' } });
    senderWorker.on('message', (m) => { if (m.error && current) current.fail(m.error); });
    senderWorker.on('error', (err) => { if (current) current.fail(`sender thread: ${err.message}`); });
    senderWorker.unref();
  }

  receiver.listen(0, HOST, 1024, () => {
    send({ type: 'ready', port: receiver.address().port, threads: senderWorker ? 2 : 1 });
  });

  let queue = Promise.resolve();
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    let cmd;
    try { cmd = JSON.parse(line); } catch { return; }
    if (cmd.cmd === 'run') {
      queue = queue.then(() => runTransfer(cmd)).then(send);
    }
  });
  rl.on('close', () => process.exit(0));
}
