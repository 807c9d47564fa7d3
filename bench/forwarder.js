// A minimal TCP forwarder on top of splicer, run as a child of the throughput benchmark:
//   node bench/forwarder.js --engine splice|js --listen PORT --to PORT
// Listens on 127.0.0.1:PORT; for each accepted connection connects to 127.0.0.1:TO (both sockets
// with allowHalfOpen) and calls forward(a, b, { engine }).
// stdout: `ready PORT` once listening, then one `done {json}` line per finished pair (the
// ForwardResult), so the benchmark can check which engine carried the bytes and how many.
// Exits when stdin closes or on SIGTERM.
import net from 'node:net';
import { parseArgs } from 'node:util';

const HOST = '127.0.0.1';

const { values } = parseArgs({
  options: {
    engine: { type: 'string', default: 'splice' },
    listen: { type: 'string', default: '0' },
    to: { type: 'string' },
  },
});
if (!values.to) {
  process.stderr.write('usage: node bench/forwarder.js --engine splice|js --listen PORT --to PORT\n');
  process.exit(2);
}
const engine = values.engine;
const listenPort = Number(values.listen);
const toPort = Number(values.to);

let api;
try {
  api = await import('../dist/index.js');
} catch (err) {
  process.stderr.write(`cannot import ../dist/index.js (run npx tsc -p tsconfig.build.json): ${err.message}\n`);
  process.exit(3);
}
if (typeof api.forward !== 'function') {
  process.stderr.write('dist/index.js does not export forward()\n');
  process.exit(3);
}
if (typeof api.engines === 'function') {
  const report = api.engines();
  const avail = report && report[engine];
  if (avail && avail.available === false) {
    process.stderr.write(`engine ${engine} not available: ${avail.reason}\n`);
    process.exit(4);
  }
}

function emit(line) {
  process.stdout.write(line + '\n');
}

const server = net.createServer({ allowHalfOpen: true }, (a) => {
  a.on('error', () => { /* forward() reports errors; until then just avoid an unhandled 'error' */ });
  const b = net.connect({ host: HOST, port: toPort, allowHalfOpen: true });
  let connected = false;
  b.on('error', () => {});
  b.once('connect', () => {
    connected = true;
    let p;
    try {
      p = api.forward(a, b, { engine });
    } catch (err) {
      emit(`done ${JSON.stringify({ error: String(err && err.message) })}`);
      a.destroy();
      b.destroy();
      return;
    }
    Promise.resolve(p).then(
      (r) => emit(`done ${JSON.stringify({
        engine: r.engine,
        bytesAtoB: r.bytesAtoB,
        bytesBtoA: r.bytesBtoA,
        durationMs: r.durationMs,
        reason: r.reason,
        ...(r.error ? { code: r.error.code, side: r.error.side } : {}),
      })}`),
      (err) => {
        emit(`done ${JSON.stringify({ error: String(err && err.message) })}`);
        a.destroy();
        b.destroy();
      },
    );
  });
  b.once('error', (err) => {
    if (connected) return;
    emit(`done ${JSON.stringify({ error: `upstream connect: ${err.code || err.message}` })}`);
    a.destroy();
  });
});

server.listen(listenPort, HOST, 1024, () => {
  emit(`ready ${server.address().port}`);
});

process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
