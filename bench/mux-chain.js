// The `chain` case of bench/mux.js: one stream's bulk through two `splicer forward` processes as a
// user chains them, n:1 into a mux session and 1:n out of it, against the same two processes
// forwarding plain TCP (splice engine, then JS engine). What is timed is the CLI as users run it;
// the CPU counted is the two forwarders'.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { HOST, cpuSeconds, freePort, median, spawnChild, stopChild, waitListening } from './lib.js';
import { connect, sendSink } from './mux-wire.js';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli', 'main.js');

/** The chains measured: a name, and each hop's arguments given (near listen, far listen, target). */
function chains(certificate) {
  const tls = certificate ? { listen: ['--tls-cert', certificate.cert, '--tls-key', certificate.key], dial: ['--tls-ca', certificate.cert] } : undefined;
  return [
    { name: 'tcp, splice engine', near: (a, b) => [`${HOST}:${a}`, `${HOST}:${b}`], far: (b, t) => [`${HOST}:${b}`, `${HOST}:${t}`] },
    { name: 'tcp, JS engine', near: (a, b) => [`${HOST}:${a}`, `${HOST}:${b}`, '--engine', 'js'], far: (b, t) => [`${HOST}:${b}`, `${HOST}:${t}`, '--engine', 'js'] },
    { name: 'mux://', near: (a, b) => [`${HOST}:${a}`, `mux://${HOST}:${b}`], far: (b, t) => [`mux://${HOST}:${b}`, `${HOST}:${t}`] },
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

/**
 * `bytes` through each chain into the sink at `sinkPort` (bench/mux-wire.js's sink), `runs` times
 * after a warm-up; GB/s and the two forwarders' CPU seconds per GiB, medians.
 */
export async function chainBulk(sinkPort, { bytes, runs, certificate }) {
  const rows = [];
  for (const chain of chains(certificate)) {
    const near = await freePort();
    const far = await freePort();
    const farChild = await forwarder(chain.far(far, sinkPort), far);
    const nearChild = await forwarder(chain.near(near, far), near);
    try {
      await sendSink(await connect(near), 16 * 1024 * 1024); // warm: JIT, the mux session up, windows grown
      const results = [];
      for (let run = 0; run < runs; run++) {
        const cpu0 = cpuSeconds(nearChild.pid) + cpuSeconds(farChild.pid);
        const t0 = process.hrtime.bigint();
        await sendSink(await connect(near), bytes);
        const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
        results.push({ seconds, cpu: cpuSeconds(nearChild.pid) + cpuSeconds(farChild.pid) - cpu0 });
      }
      rows.push({
        name: chain.name,
        gbps: median(results.map((r) => bytes / r.seconds / 1e9)),
        cpuPerGib: median(results.map((r) => r.cpu / (bytes / 1024 ** 3))),
      });
    } finally {
      await stopChild(nearChild);
      await stopChild(farChild);
    }
  }
  const base = rows[0];
  return [
    `\none stream through two splicer forward processes, ${bytes / 1024 / 1024} MiB × ${runs} runs (medians), CPU of the two forwarders:`,
    '| chain | GB/s | CPU s per GiB | GB/s vs tcp splice | CPU vs tcp splice |',
    '|---|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.name} | ${r.gbps.toFixed(2)} | ${r.cpuPerGib.toFixed(2)} | ${(r.gbps / base.gbps).toFixed(2)} | ${(r.cpuPerGib / base.cpuPerGib).toFixed(2)} |`),
  ];
}
