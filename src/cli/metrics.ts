// `--metrics HOST:PORT` for every command: the flag, the exposure check, and the endpoint, served by
// this process, or with --workers by the supervisor, which sums what its workers report.
import type { ChildProcess } from 'node:child_process';
import { Option } from 'commander';
import { formatHostPort, type HostPort } from '../net/host-port.js';
import type { Logger } from '../logger.js';
import { hostPortArg } from './flags.js';
import { ServiceMetrics, type MetricsSource } from '../metrics/registry.js';
import { MetricsServer, metricsExposure } from '../metrics/server.js';
import { answerMetricsRequests, workersMetrics } from '../metrics/workers.js';

export const metricsOption = () =>
  new Option(
    '--metrics <host:port>',
    'serve Prometheus metrics (GET /metrics) and GET /healthz on this address; :PORT means 127.0.0.1; beyond loopback only with --open. ' +
      'With --workers the supervisor serves them, summed over the workers',
  ).argParser(hostPortArg('127.0.0.1', true));

/** For a command whose only address beyond loopback that needs leave is --metrics. */
export const metricsOpenOption = () => new Option('--open', 'allow a --metrics address beyond loopback');

export interface MetricsFlags {
  metrics?: HostPort;
  open?: boolean;
}

/** Throws the CLI's refusal of a --metrics address beyond loopback without --open; call before anything starts. */
export function checkMetricsFlags(flags: MetricsFlags): void {
  if (!flags.metrics) return;
  const refusal = metricsExposure(flags.metrics, flags.open);
  if (refusal) throw new Error(`refusing to start: ${refusal}`);
}

/**
 * The process's metrics, when --metrics is given: served here, or in a worker answered over IPC
 * to the supervisor, which serves them (superviseMetrics).
 */
/** `inWorker`: this process is a worker of --workers. */
export async function startMetrics(flags: MetricsFlags, source: MetricsSource, logger: Logger, inWorker: boolean): Promise<ServiceMetrics | undefined> {
  if (!flags.metrics) return undefined;
  const metrics = new ServiceMetrics(source);
  if (inWorker) {
    answerMetricsRequests(metrics);
    return metrics;
  }
  const server = await startServer(flags, () => metrics.text(), metrics.registry.contentType);
  logger.info({ metrics: formatHostPort(server.address()) }, 'metrics listening');
  return metrics;
}

/** In the supervisor of --workers: /metrics sums the registries of the workers running. */
export async function superviseMetrics(flags: MetricsFlags, workers: () => ChildProcess[], logger: Logger): Promise<void> {
  if (!flags.metrics) return;
  const server = await startServer(flags, () => workersMetrics(workers()), 'text/plain; version=0.0.4; charset=utf-8');
  logger.info({ metrics: formatHostPort(server.address()) }, 'metrics listening');
}

async function startServer(flags: MetricsFlags, metrics: () => Promise<string>, contentType: string): Promise<MetricsServer> {
  try {
    return await MetricsServer.start({ listen: flags.metrics!, open: flags.open, metrics, contentType });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new Error(e.code === 'ERR_METRICS_EXPOSED' ? `refusing to start: ${e.message}` : `--metrics ${formatHostPort(flags.metrics!)}: ${e.code ?? e.message}`);
  }
}
