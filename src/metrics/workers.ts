// `--workers N` with `--metrics`: the supervisor serves /metrics, and each scrape asks every worker
// for its registry (getMetricsAsJSON) over the worker's IPC channel and sums them
// (AggregatorRegistry.aggregate: counters, histograms and gauges summed per label set), so a
// scrape reads as one process serving the port would. A worker that does not answer within the
// timeout (starting, dying) is left out of that scrape, and `splicer_workers_scraped` says how
// many answered. A restarted worker starts its counters at 0: the sum then drops, which
// Prometheus' rate() takes as a counter reset.
import type { ChildProcess } from 'node:child_process';
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { ServiceMetrics } from './registry.js';

type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

interface MetricsRequest {
  type: 'metrics-request';
  id: number;
}

interface MetricsReply {
  type: 'metrics';
  id: number;
  metrics?: MetricsJson;
  error?: string;
}

/** How long a scrape waits for each worker. */
export const WORKER_SCRAPE_TIMEOUT_MS = 2_000;

/** In a worker: answers the supervisor's metrics requests with this process's registry. */
export function answerMetricsRequests(metrics: ServiceMetrics): void {
  process.on('message', (message: MetricsRequest) => {
    if (message?.type !== 'metrics-request') return;
    const send = (reply: MetricsReply) => {
      // The supervisor may be gone: its channel closed, the reply has nowhere to go.
      if (process.connected) process.send?.(reply);
    };
    metrics.registry.getMetricsAsJSON().then(
      (json) => send({ type: 'metrics', id: message.id, metrics: json }),
      (err: Error) => send({ type: 'metrics', id: message.id, error: err.message }),
    );
  });
}

let nextRequest = 1;

/** One worker's registry as JSON, or undefined when it does not answer in time. */
function askWorker(child: ChildProcess, timeoutMs: number): Promise<MetricsJson | undefined> {
  if (!child.connected) return Promise.resolve(undefined);
  const id = nextRequest++;
  return new Promise((resolve) => {
    const finish = (json: MetricsJson | undefined) => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      resolve(json);
    };
    const onMessage = (message: MetricsReply) => {
      if (message?.type === 'metrics' && message.id === id) finish(message.metrics);
    };
    const onExit = () => finish(undefined);
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    child.on('message', onMessage);
    child.on('exit', onExit);
    try {
      child.send({ type: 'metrics-request', id } satisfies MetricsRequest);
    } catch {
      finish(undefined);
    }
  });
}

/** The workers' registries summed, in Prometheus' text format, with how many answered. */
export async function workersMetrics(children: ChildProcess[], timeoutMs = WORKER_SCRAPE_TIMEOUT_MS): Promise<string> {
  const answers = (await Promise.all(children.map((child) => askWorker(child, timeoutMs)))).filter((json): json is MetricsJson => json !== undefined);
  const summed = answers.length > 0 ? await AggregatorRegistry.aggregate(answers).metrics() : '';
  return (
    summed +
    '# HELP splicer_workers_scraped Workers whose metrics this scrape sums (the others did not answer in time)\n' +
    '# TYPE splicer_workers_scraped gauge\n' +
    `splicer_workers_scraped ${answers.length}\n` +
    '# HELP splicer_workers Worker processes running\n' +
    '# TYPE splicer_workers gauge\n' +
    `splicer_workers ${children.length}\n`
  );
}
