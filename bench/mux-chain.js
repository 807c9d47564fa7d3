// The `chain` case of bench/mux.js: one stream's bulk through two `splicer forward` processes as a
// user chains them, n:1 into a mux session and 1:n out of it, against the same two processes
// forwarding plain TCP (splice engine, then JS engine). What is timed is the CLI as users run it;
// the CPU counted is the two forwarders'. With Go, the same chain of two Go programs built on
// hashicorp/yamux (forward-in, forward-out of test/peers/yamux-peer) is the yamux baseline.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { HOST, cpuSeconds, freePort, median, spawnChild, stopChild, waitLine, waitListening } from './lib.js';
import { connect, sendSink } from './mux-wire.js';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli', 'main.js');

/** The chains measured: a name, and each hop's arguments given (near listen, far listen, target). */
function chains(certificate) {
  const tls = certificate ? { listen: ['--tls-cert', certificate.cert, '--tls-key', certificate.key], dial: ['--tls-ca', certificate.cert] } : undefined;
  return [
    { name: 'tcp, splice engine', near: (a, b) => [`${HOST}:${a}`, `${HOST}:${b}`], far: (b, t) => [`${HOST}:${b}`, `${HOST}:${t}`] },
    { name: 'tcp, JS engine', near: (a, b) => [`${HOST}:${a}`, `${HOST}:${b}`, '--engine', 'js'], far: (b, t) => [`${HOST}:${b}`, `${HOST}:${t}`, '--engine', 'js'] },
    { name: 'mux:// (spliced where the addon is)', near: (a, b) => [`${HOST}:${a}`, `mux://${HOST}:${b}`], far: (b, t) => [`mux://${HOST}:${b}`, `${HOST}:${t}`] },
    {
      name: 'mux://, --mux-data-path js',
      near: (a, b) => [`${HOST}:${a}`, `mux://${HOST}:${b}`, '--mux-data-path', 'js'],
      far: (b, t) => [`mux://${HOST}:${b}`, `${HOST}:${t}`, '--mux-data-path', 'js'],
    },
    ...(tls
      ? [{ name: 'mux+tls://', near: (a, b) => [`${HOST}:${a}`, `mux+tls://${HOST}:${b}`, ...tls.dial], far: (b, t) => [`mux+tls://${HOST}:${b}`, `${HOST}:${t}`, ...tls.listen] }]
      : []),
  ];
}

async function forwarder([listen, to, ...rest], port) {
  const child = spawnChild(process.execPath, [cli, 'forward', '--listen', listen, '--to', to, ...rest, '--log-level', 'warn']);
  await waitListening(port, child, 15_000);
  return child;
}

/** A chain of two splicer forward processes: the near one's port and both children. */
async function startSplicer(chain, sinkPort) {
  const near = await freePort();
  const far = await freePort();
  const farChild = await forwarder(chain.far(far, sinkPort), far);
  const nearChild = await forwarder(chain.near(near, far), near);
  return { port: near, children: [nearChild, farChild] };
}

/** The same chain of two Go programs on hashicorp/yamux (test/peers/yamux-peer forward-in, forward-out), 4 MiB windows as splicer's. */
async function startGo(goBin, sinkPort) {
  const go = async (args) => {
    const child = spawnChild(goBin, ['-window', String(4 * 1024 * 1024), ...args]);
    const line = await waitLine(child, (l) => l.startsWith('listening '), 10_000, 'the Go forwarder listening');
    return { child, port: Number(line.split(' ')[1]) };
  };
  const far = await go(['forward-out', `${HOST}:${sinkPort}`]);
  const near = await go(['forward-in', `${HOST}:${far.port}`]);
  return { port: near.port, children: [near.child, far.child] };
}

/**
 * `bytes` through each chain into the sink at `sinkPort` (bench/mux-wire.js's sink), `runs` times
 * after a warm-up; GB/s and the two forwarders' CPU seconds per GiB, medians.
 */
export async function chainBulk(sinkPort, { bytes, runs, certificate, goBin }) {
  const rows = [];
  const starts = chains(certificate).map((chain) => ({ name: chain.name, start: () => startSplicer(chain, sinkPort) }));
  if (goBin) starts.push({ name: 'Go hashicorp/yamux forwarders', start: () => startGo(goBin, sinkPort) });
  for (const { name, start } of starts) {
    const { port, children } = await start();
    const cpu = () => children.reduce((sum, child) => sum + cpuSeconds(child.pid), 0);
    try {
      await sendSink(await connect(port), 16 * 1024 * 1024); // warm: JIT, the mux session up, windows grown
      const results = [];
      for (let run = 0; run < runs; run++) {
        const cpu0 = cpu();
        const t0 = process.hrtime.bigint();
        await sendSink(await connect(port), bytes);
        const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
        results.push({ seconds, cpu: cpu() - cpu0 });
      }
      rows.push({
        name,
        gbps: median(results.map((r) => bytes / r.seconds / 1e9)),
        cpuPerGib: median(results.map((r) => r.cpu / (bytes / 1024 ** 3))),
      });
    } finally {
      for (const child of children) await stopChild(child);
    }
  }
  const base = rows[0];
  const go = rows.find((r) => r.name.startsWith('Go '));
  const vsGo = (r) => (go ? ` ${(r.gbps / go.gbps).toFixed(2)} | ${(r.cpuPerGib / go.cpuPerGib).toFixed(2)} |` : '');
  return [
    `\none stream through two forwarder processes, ${bytes / 1024 / 1024} MiB × ${runs} runs (medians), CPU of the two forwarders:`,
    `| chain | GB/s | CPU s per GiB | GB/s vs tcp splice | CPU vs tcp splice |${go ? ' GB/s vs Go | CPU vs Go |' : ''}`,
    `|---|---:|---:|---:|---:|${go ? '---:|---:|' : ''}`,
    ...rows.map((r) => `| ${r.name} | ${r.gbps.toFixed(2)} | ${r.cpuPerGib.toFixed(2)} | ${(r.gbps / base.gbps).toFixed(2)} | ${(r.cpuPerGib / base.cpuPerGib).toFixed(2)} |${vsGo(r)}`),
  ];
}
