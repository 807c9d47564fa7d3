// The `splicer` command run as a user runs it: the built package (dist/cli/main.js) in a child process,
// its JSON log lines on stdout read as they come. Every wait fails fast, naming what was missing,
// when the child exits first or the wait runs out, so a crashed child never hangs a test.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { afterEach } from 'vitest';

export const CLI = path.join(import.meta.dirname, '..', 'dist', 'cli', 'main.js');

export type LogLine = Record<string, unknown>;

export interface CliProcess {
  child: ChildProcess;
  /** Every JSON line it wrote to stdout so far. */
  lines: LogLine[];
  /** Every line it wrote to stderr so far. */
  stderr: string[];
  /**
   * The next line with this `msg` (and matching `pred`) not returned before: a second call for
   * 'connection closed' waits for a second connection.
   */
  waitFor(msg: string, pred?: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** A stderr line containing `text` (stderr and stdout are separate pipes: no order between them). */
  waitForStderr(text: string, timeoutMs?: number): Promise<string>;
  /** Its exit code (null when a signal ended it). */
  exited: Promise<number | null>;
  /** Sends `signal` (SIGTERM by default) and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

const running = new Set<ChildProcess>();

afterEach(() => {
  for (const child of running) child.kill('SIGKILL');
  running.clear();
});

/** `splicer ...args` in the background; killed after the test if it is still running. */
export function startCli(args: string[], options: { env?: Record<string, string> } = {}): CliProcess {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env } });
  running.add(child);
  const lines: LogLine[] = [];
  const stderr: string[] = [];
  const waiters: Array<() => void> = [];
  const wake = () => waiters.splice(0).forEach((w) => w());
  readline.createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      lines.push(JSON.parse(line) as LogLine);
    } catch {
      lines.push({ msg: '(not JSON)', line });
    }
    wake();
  });
  readline.createInterface({ input: child.stderr! }).on('line', (line) => {
    stderr.push(line);
    wake();
  });
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      exitCode = code;
      running.delete(child);
      wake();
      resolve(code);
    }),
  );
  // Waits for `found()` to return something, or fails when the child exits or time runs out.
  const until = async <T>(what: string, timeoutMs: number, found: () => T | undefined): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = found();
      if (hit !== undefined) return hit;
      if (exitCode !== undefined) throw new Error(`splicer ${args[0]} exited (${exitCode}) before ${what}; stderr: ${stderr.join('\n')}`);
      if (Date.now() > deadline) throw new Error(`no ${what} within ${timeoutMs} ms; stderr: ${stderr.join('\n')}`);
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 200);
      });
    }
  };
  const seen = new Set<LogLine>();
  const waitFor = (msg: string, pred: (line: LogLine) => boolean = () => true, timeoutMs = 20_000) =>
    until(`"${msg}"`, timeoutMs, () => {
      const line = lines.find((l) => l.msg === msg && !seen.has(l) && pred(l));
      if (line) seen.add(line);
      return line;
    });
  const waitForStderr = (text: string, timeoutMs = 20_000) => until(`"${text}" on stderr`, timeoutMs, () => stderr.find((l) => l.includes(text)));
  const stop = (signal: NodeJS.Signals = 'SIGTERM') => {
    if (exitCode === undefined) child.kill(signal);
    return exited;
  };
  return { child, lines, stderr, waitFor, waitForStderr, exited, stop };
}

/** `splicer ...args` run to its end (at most `timeout` ms): its exit status and output. */
export function runCli(args: string[], options: { env?: Record<string, string>; timeout?: number } = {}): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: options.timeout ?? 20_000, env: { ...process.env, ...options.env } });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** The port of a logged `HOST:PORT`. */
export const portOf = (listen: unknown): number => Number(String(listen).split(':').pop());

/**
 * A port on 127.0.0.1 that was free a moment ago, for a flag that does not take port 0. Taken
 * outside the kernel's ephemeral range where there is room: a port the kernel just handed out is
 * the kind it hands out next to another test's outgoing connection, which can take it before the
 * server that was given it binds (seen: a tunnel server refusing a registration, no-free-port).
 */
export async function freePort(): Promise<number> {
  const [low, high] = ephemeralRange();
  const ranges = [
    [20000, low - 1],
    [high + 1, 65535],
  ].filter(([a, b]) => b - a >= 1000);
  for (let attempt = 0; attempt < 50 && ranges.length > 0; attempt++) {
    const [a, b] = ranges[attempt % ranges.length];
    const port = a + Math.floor(Math.random() * (b - a + 1));
    if (portsHandedOut.has(port)) continue;
    if (await canBind(port)) {
      portsHandedOut.add(port);
      return port;
    }
  }
  return kernelPort();
}

const portsHandedOut = new Set<number>();

function ephemeralRange(): [number, number] {
  try {
    const [low, high] = fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (low > 0 && high >= low) return [low, high];
  } catch {
    // not Linux: the IANA range
  }
  return [49152, 65535];
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
}

function kernelPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
    probe.on('error', reject);
  });
}
