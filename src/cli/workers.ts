// --workers N|auto: N processes of one command, each with its own listening socket on every
// --listen port (SO_REUSEPORT, made by the addon: Node 20 has no reusePort, and node:cluster would
// accept every connection in the primary and pass it over IPC). The kernel spreads new connections
// over the sockets of the group.
//
// The supervisor (the process the user started) forks the workers (the same command line, with
// SPLICER_WORKER set), holds no listening socket itself (one that never accepts would get its share
// of the connections, and they would hang), restarts a worker that dies, passes SIGTERM, SIGINT and
// SIGHUP on, and writes the workers' JSON lines to its stdout whole, so there is one log stream.
//
// Worker 0 starts first and reports the addresses it bound (names resolved, port 0 made a real
// port); the others, and every restarted worker, bind those same addresses, so the group agrees on
// one port even for :0, and the port is never left unheld while the supervisor picks it.
import { fork, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import { InvalidArgumentError, Option } from 'commander';
import { formatHostPort, type HostPort } from '../net/host-port.js';
import type { OpenListenFd } from '../net/listeners.js';
import { loadNative } from '../engine/splice/native.js';
import { createLogger, LogDestination, type Logger, type LOG_LEVELS } from '../logger.js';
import { exitBySignal } from './flags.js';
import { superviseMetrics, type MetricsFlags } from './metrics.js';
import { countConfigReload } from '../metrics/reloads.js';
import { serviceNotifier } from '../ops/systemd-notify.js';

/** Set by the supervisor in each worker: its index, 0 to N-1. */
export const WORKER_ENV = 'SPLICER_WORKER';
/** Set by the supervisor for every worker but the first one: the addresses to bind (JSON HostPort[]). */
export const WORKER_LISTEN_ENV = 'SPLICER_WORKER_LISTEN';

/** Most workers a command takes. */
export const MAX_WORKERS = 256;
/** A worker that exits this many times in a row before it is listening makes the supervisor give up. */
export const MAX_START_FAILURES = 5;
/** Restart delays: the first, and the most it doubles to for a worker that keeps dying soon after its start. */
const FIRST_RESTART_MS = 250;
const MAX_RESTART_MS = 10_000;
/** A worker up this long before it died is restarted after the first delay again. */
const STABLE_MS = 30_000;
/** After the grace, how long workers get to exit before they are killed. */
const STOP_MARGIN_MS = 10_000;

/** `--workers`: a whole number from 1 to 256, or `auto` (one per CPU this process may use). */
export function workersArg(value: string): number {
  if (value.trim() === 'auto') return Math.min(os.availableParallelism(), MAX_WORKERS);
  if (!/^\d+$/.test(value.trim())) throw new InvalidArgumentError(`--workers must be a whole number or auto, got "${value}"`);
  const number = Number(value);
  if (number < 1 || number > MAX_WORKERS) throw new InvalidArgumentError(`--workers must be from 1 to ${MAX_WORKERS} or auto, got ${number}`);
  return number;
}

/** `note`: what else a command says about its workers (what they do not share, what refuses them). */
export const workersOption = (note = '') =>
  new Option(
    '--workers <n|auto>',
    'processes serving the same addresses, each with its own SO_REUSEPORT socket (the kernel spreads connections over them); ' +
      `auto = one per CPU; each worker has its own engine threads, and its log lines carry "worker"${note}; needs the addon`,
  )
    .argParser(workersArg)
    .default(1);

/**
 * For a command that holds state in its one process: a `--workers` that is refused with the reason,
 * rather than commander's "unknown option". Hidden from --help (it is not offered).
 */
export const refusedWorkersOption = (reason: string) =>
  new Option('--workers <n>')
    .argParser(() => {
      throw new InvalidArgumentError(`${reason}; --workers is not offered here`);
    })
    .hideHelp();

/** What this process is: a worker of a supervisor (its index, the addresses to bind), or not. */
export interface WorkerRole {
  index: number;
  /** The addresses worker 0 bound, for the others to bind too; absent for the first start of worker 0. */
  listen?: HostPort[];
}

export function workerRole(): WorkerRole | undefined {
  const index = process.env[WORKER_ENV];
  if (index === undefined || !/^\d+$/.test(index) || process.send === undefined) return undefined;
  const listen = process.env[WORKER_LISTEN_ENV];
  return { index: Number(index), listen: listen ? (JSON.parse(listen) as HostPort[]) : undefined };
}

/** A command's logger: in a worker every line carries `worker: <index>`. */
export function commandLogger(level: (typeof LOG_LEVELS)[number], role = workerRole()): Logger {
  return createLogger(level, role ? { base: { worker: role.index } } : {});
}

/**
 * What stops `--workers N` (N > 1) here, or undefined: each worker's socket comes from the addon,
 * and there is no other way to a socket of its own on a shared port in Node 20.
 */
export function workersUnavailable(): string | undefined {
  const { reason } = loadNative();
  return reason ? `--workers needs a listening socket of its own per worker (SO_REUSEPORT), made by the native addon, which is not available here (${reason}); use --workers 1` : undefined;
}

/** In a worker: the addon's SO_REUSEPORT listener, for the service's Listeners. */
export function reusePortListenFd(): OpenListenFd {
  const { binding, reason } = loadNative();
  if (!binding) throw new Error(`--workers: ${reason}`);
  return (host, port) => binding.openListener(host, port, undefined, true);
}

/** A worker's message to its supervisor. */
interface ListeningMessage {
  type: 'listening';
  addresses: HostPort[];
}

/**
 * In a worker, once its service listens: tells the supervisor what it bound, and stops the worker
 * as SIGTERM would (draining) when the supervisor is gone (its IPC channel closed), so that a
 * supervisor killed outright does not leave workers serving on their own.
 */
export function workerListening(addresses: HostPort[], logger: Logger): void {
  process.once('disconnect', () => {
    logger.level = 'silent';
    process.kill(process.pid, 'SIGTERM');
  });
  // After the startup line is written, so that the supervisor's "workers started" comes after it.
  logger.flush(() => process.send?.({ type: 'listening', addresses } satisfies ListeningMessage));
}

export interface SuperviseOptions {
  workers: number;
  /** Seconds the workers drain for on SIGTERM/SIGINT (their --grace); past it and a margin, they are killed. */
  grace: number;
  logLevel: (typeof LOG_LEVELS)[number];
  /** --metrics (and --open): served by the supervisor, summed over the workers. */
  metrics?: MetricsFlags;
  /**
   * On SIGHUP, before any worker hears of it: reads and checks the command's options again
   * (its config file) and throws on any error, so that a bad file reaches no worker.
   */
  validate?: () => void;
}

interface Slot {
  index: number;
  child?: ChildProcess;
  /** Reported its addresses: serving. */
  listening: boolean;
  startedAt: number;
  /** Exits in a row before it was listening. */
  startFailures: number;
  /** Deaths in a row, each soon after its start: the restart delay doubles with them. */
  quickDeaths: number;
  restartTimer?: NodeJS.Timeout;
}

/**
 * Runs the command as `workers` processes and resolves never: the supervisor exits when its workers
 * have (0 when every one exited 0), or with 1 when a worker cannot start.
 */
export async function superviseWorkers(options: SuperviseOptions): Promise<void> {
  // Every line, the workers' and its own, goes through one destination, whole and in order.
  const stdout = new LogDestination(1);
  const logger = createLogger(options.logLevel, { base: { worker: 'supervisor' }, destination: stdout });
  // The supervisor is the service systemd knows: ready when every worker listens, stopping on SIGTERM.
  const notifier = serviceNotifier(logger);
  const slots: Slot[] = Array.from({ length: options.workers }, (_, index) => ({ index, listening: false, startedAt: 0, startFailures: 0, quickDeaths: 0 }));
  let listen: HostPort[] | undefined;
  let announced = false;
  let stopping = false;
  let failed = false;
  let exitCode = 0;
  let stopSignal: NodeJS.Signals | undefined;

  const live = () => slots.filter((slot) => slot.child);
  // The last lines get a moment to be written, and no more: a stalled reader must not keep the
  // supervisor from exiting.
  const exit = (code: number) =>
    void stdout.flushWithin(1000).then((flushed) => (flushed || !stopSignal ? process.exit(code) : exitBySignal(stopSignal)));

  const start = (slot: Slot) => {
    slot.restartTimer = undefined;
    const env: NodeJS.ProcessEnv = { ...process.env, [WORKER_ENV]: String(slot.index) };
    // Only the supervisor talks to systemd.
    for (const name of ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID']) delete env[name];
    if (listen) env[WORKER_LISTEN_ENV] = JSON.stringify(listen);
    else delete env[WORKER_LISTEN_ENV];
    const child = fork(process.argv[1]!, process.argv.slice(2), { env, stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
    slot.child = child;
    slot.listening = false;
    slot.startedAt = Date.now();
    passLines(child, stdout);
    child.on('message', (message: ListeningMessage) => {
      if (message?.type !== 'listening') return;
      slot.listening = true;
      slot.startFailures = 0;
      if (!listen) {
        listen = message.addresses;
        for (const other of slots) if (other !== slot && !other.child && !stopping) start(other);
      }
      if (announced) logger.info({ index: slot.index, pid: child.pid }, 'worker restarted');
      else if (slots.every((s) => s.listening)) {
        announced = true;
        logger.info({ workers: slots.length, pids: slots.map((s) => s.child?.pid), listen: listen.map(formatHostPort) }, 'workers started');
        notifier.ready();
      }
    });
    // 'close', not 'exit': its last lines are read by then.
    child.on('close', (code, signal) => onExit(slot, child, code, signal));
  };

  const onExit = (slot: Slot, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null) => {
    slot.child = undefined;
    if (stopping) {
      // A worker that drained exits 0; one still starting may have died of the signal itself.
      if (code !== 0 && signal !== stopSignal) exitCode = 1;
      if (live().length === 0) {
        logger.info({ exitCode: failed ? 1 : exitCode }, 'stopped');
        exit(failed ? 1 : exitCode);
      }
      return;
    }
    const upMs = Date.now() - slot.startedAt;
    if (!slot.listening) slot.startFailures++;
    slot.quickDeaths = upMs >= STABLE_MS ? 1 : slot.quickDeaths + 1;
    if (!listen) {
      // The first worker could not listen (the address is taken, a name does not resolve...): its own
      // error is on stderr; the same command would fail the same way in every worker.
      logger.error({ index: slot.index, pid: child.pid, code, signal }, 'worker exited before it was listening; not starting the others');
      process.stderr.write(`splicer: --workers: worker ${slot.index} exited (${signal ?? `code ${code}`}) before it was listening\n`);
      stopAll('SIGTERM', true);
      return;
    }
    if (slot.startFailures >= MAX_START_FAILURES) {
      logger.error({ index: slot.index, pid: child.pid, code, signal, startFailures: slot.startFailures }, 'worker keeps exiting before it is listening; stopping');
      process.stderr.write(`splicer: --workers: worker ${slot.index} exited ${slot.startFailures} times in a row before it was listening; giving up\n`);
      stopAll('SIGTERM', true);
      return;
    }
    const delayMs = Math.min(FIRST_RESTART_MS * 2 ** (slot.quickDeaths - 1), MAX_RESTART_MS);
    logger.warn({ index: slot.index, pid: child.pid, code, signal, upMs, restartInMs: delayMs }, 'worker exited');
    slot.restartTimer = setTimeout(() => start(slot), delayMs);
  };

  const stopAll = (signal: NodeJS.Signals, failure = false) => {
    if (stopping) return;
    stopping = true;
    notifier.stopping();
    stopSignal = signal;
    failed = failure;
    for (const slot of slots) clearTimeout(slot.restartTimer);
    const running = live();
    if (!failure) logger.info({ signal, workers: running.length, graceSeconds: options.grace }, 'stopping');
    if (running.length === 0) {
      logger.info({ exitCode: failure ? 1 : exitCode }, 'stopped');
      exit(failure ? 1 : exitCode);
      return;
    }
    for (const slot of running) slot.child!.kill(signal);
    // Workers end their connections after the grace and exit; one that does not is killed.
    setTimeout(() => {
      for (const slot of live()) {
        logger.warn({ index: slot.index, pid: slot.child!.pid }, 'worker did not exit after the grace; killing it');
        slot.child!.kill('SIGKILL');
      }
    }, options.grace * 1000 + STOP_MARGIN_MS).unref();
  };

  process.on('SIGINT', () => stopAll('SIGINT'));
  process.on('SIGTERM', () => stopAll('SIGTERM'));
  process.on('SIGHUP', () => {
    if (stopping) return;
    notifier.reloading();
    try {
      options.validate?.();
    } catch (err) {
      countConfigReload('failure');
      logger.error({ err: (err as Error).message }, 'config reload failed; the workers keep the running config');
      notifier.ready();
      return;
    }
    const running = live();
    logger.info({ pids: running.map((slot) => slot.child!.pid) }, 'SIGHUP passed to the workers');
    for (const slot of running) slot.child!.kill('SIGHUP');
    notifier.ready();
  });

  // Before any worker: an address it cannot have stops the command before it serves.
  await superviseMetrics(options.metrics ?? {}, () => live().map((slot) => slot.child!), logger);
  logger.info({ workers: options.workers }, 'starting workers');
  start(slots[0]!);
  return new Promise<void>(() => {});
}

/** A worker's stdout, written to ours in whole lines only, so that lines of two workers never mix. */
function passLines(child: ChildProcess, stdout: LogDestination): void {
  let partial: Buffer | undefined;
  child.stdout!.on('data', (chunk: Buffer) => {
    const end = chunk.lastIndexOf(0x0a);
    if (end < 0) {
      partial = partial ? Buffer.concat([partial, chunk]) : chunk;
      return;
    }
    const whole = partial ? Buffer.concat([partial, chunk.subarray(0, end + 1)]) : chunk.subarray(0, end + 1);
    partial = end + 1 < chunk.length ? chunk.subarray(end + 1) : undefined;
    stdout.write(whole.toString());
  });
  child.stdout!.on('end', () => {
    if (partial) stdout.write(`${partial.toString()}\n`);
    partial = undefined;
  });
}
