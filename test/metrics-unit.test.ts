// The metrics without a socket: the registry's series from a service's counts, the outcome
// mappings (fuzzed), the reload counter, the exposure rule, and the sum over workers' registries.
import { EventEmitter } from 'node:events';
import type { ChildProcess } from 'node:child_process';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { ServiceMetrics, type MetricsSource } from '../src/metrics/registry.js';
import { countConfigReload } from '../src/metrics/reloads.js';
import { proxyHandshakeFailure, tunnelRejectionReason } from '../src/metrics/outcomes.js';
import { metricsExposure } from '../src/metrics/server.js';
import { workersMetrics } from '../src/metrics/workers.js';
import { observed } from '../src/net/connect-observer.js';
import { DialError } from '../src/net/connect.js';
import { has, samples, sum } from './metrics-helpers.js';

const made: ServiceMetrics[] = [];
afterEach(() => {
  for (const metrics of made.splice(0)) metrics.close();
});

function metricsOf(source: Partial<MetricsSource> = {}): ServiceMetrics {
  const metrics = new ServiceMetrics({ service: 'proxy', activeConnections: () => 0, ...source });
  made.push(metrics);
  return metrics;
}

const REASONS = ['auth', 'denied', 'bad_request', 'timeout'];

describe('ServiceMetrics', () => {
  it('counts ended connections by outcome, their lengths, and handshake failures; reads active connections when scraped', async () => {
    let active = 7;
    const metrics = metricsOf({ activeConnections: () => active });
    metrics.connectionEnded({ outcome: 'eof', durationMs: 1500 });
    metrics.connectionEnded({ outcome: 'eof', durationMs: 500 });
    metrics.connectionEnded({ outcome: 'auth-failed', durationMs: 2, handshakeFailure: 'auth' });
    metrics.handshakeFailed('timeout');
    let text = await metrics.text();
    expect(sum(text, 'splicer_connections_total', { service: 'proxy', outcome: 'eof' })).toBe(2);
    expect(sum(text, 'splicer_connections_total', { outcome: 'auth-failed' })).toBe(1);
    expect(sum(text, 'splicer_connection_duration_seconds_count')).toBe(3);
    expect(sum(text, 'splicer_connection_duration_seconds_sum')).toBeCloseTo(2.002, 6);
    expect(sum(text, 'splicer_connection_duration_seconds_bucket', { le: '1' })).toBe(2);
    expect(sum(text, 'splicer_handshake_failures_total', { reason: 'auth' })).toBe(1);
    expect(sum(text, 'splicer_handshake_failures_total', { reason: 'timeout' })).toBe(1);
    expect(sum(text, 'splicer_connections_active')).toBe(7);
    active = 3;
    text = await metrics.text();
    expect(sum(text, 'splicer_connections_active')).toBe(3);
    // A second scrape reports the same totals: scrape-time counters are set, not added to.
    expect(sum(text, 'splicer_connections_total')).toBe(3);
  });

  it('labels every series with the service and the extra labels, and serves the extra gauges', async () => {
    let sessions = 2;
    const metrics = metricsOf({ service: 'tunnel', labels: { role: 'server' }, gauges: [{ name: 'splicer_tunnel_sessions', help: 'sessions', read: () => sessions }] });
    let text = await metrics.text();
    expect(sum(text, 'splicer_tunnel_sessions', { service: 'tunnel', role: 'server' })).toBe(2);
    sessions = 0;
    text = await metrics.text();
    expect(sum(text, 'splicer_tunnel_sessions')).toBe(0);
    for (const sample of samples(text)) expect(sample.labels.service, sample.name).toBe('tunnel');
    // No gauge whose name ends in _total (promtool's lint).
    expect(has(text, 'nodejs_active_handles_total')).toBe(false);
    expect(has(text, 'nodejs_active_handles')).toBe(true);
  });

  it('times upstream connects that succeed and counts failures by code; aborts and rule refusals are no connect failure', async () => {
    const metrics = metricsOf();
    await observed(() => Promise.resolve('connected'));
    await expect(observed(() => Promise.reject(new DialError('ECONNREFUSED', 'refused')))).rejects.toThrow('refused');
    await expect(observed(() => Promise.reject(new DialError('ECONNREFUSED', 'refused')))).rejects.toThrow();
    await expect(observed(() => Promise.reject(new DialError('ABORT_ERR', 'aborted')))).rejects.toThrow();
    await expect(observed(() => Promise.reject(new DialError('EACCES', 'denied')), () => true)).rejects.toThrow();
    const text = await metrics.text();
    expect(sum(text, 'splicer_upstream_connect_duration_seconds_count')).toBe(1);
    expect(sum(text, 'splicer_upstream_connect_errors_total', { code: 'ECONNREFUSED' })).toBe(2);
    expect(sum(text, 'splicer_upstream_connect_errors_total')).toBe(2);
    metrics.close();
    await expect(observed(() => Promise.reject(new DialError('ETIMEDOUT', 'late')))).rejects.toThrow();
    expect(sum(await metrics.text(), 'splicer_upstream_connect_errors_total')).toBe(2);
  });

  it('reads the JS engine\'s byte counters at scrape time', async () => {
    const text = await metricsOf().text();
    expect(has(text, 'splicer_bytes_total')).toBe(true);
    expect(samples(text).filter((s) => s.name === 'splicer_bytes_total').map((s) => s.labels.direction).sort()).toEqual(['down', 'up']);
  });
});

describe('countConfigReload', () => {
  it('counts reloads by result, for a registry made before or after', async () => {
    const early = metricsOf();
    const before = await early.text();
    countConfigReload('success');
    countConfigReload('failure');
    countConfigReload('failure');
    for (const metrics of [early, metricsOf()]) {
      const text = await metrics.text();
      expect(sum(text, 'splicer_config_reloads_total', { result: 'success' }) - sum(before, 'splicer_config_reloads_total', { result: 'success' })).toBe(1);
      expect(sum(text, 'splicer_config_reloads_total', { result: 'failure' }) - sum(before, 'splicer_config_reloads_total', { result: 'failure' })).toBe(2);
    }
  });

  it('refuses a result it does not know', () => {
    expect(() => countConfigReload('partial' as never)).toThrow(TypeError);
  });
});

describe('outcome mappings', () => {
  it("maps the proxy's handshake outcomes, and nothing else", () => {
    expect(proxyHandshakeFailure('auth-failed')).toBe('auth');
    expect(proxyHandshakeFailure('denied')).toBe('denied');
    expect(proxyHandshakeFailure('bad-request')).toBe('bad_request');
    expect(proxyHandshakeFailure('handshake-timeout')).toBe('timeout');
    for (const outcome of ['eof', 'reset', 'ECONNREFUSED', 'client-closed', 'limit', 'constructor', '__proto__', 'toString']) {
      expect(proxyHandshakeFailure(outcome), outcome).toBeUndefined();
    }
  });

  it("maps the tunnel server's refusals", () => {
    expect(tunnelRejectionReason('auth-failed')).toBe('auth');
    expect(tunnelRejectionReason('bad-mac')).toBe('auth');
    expect(tunnelRejectionReason('busy')).toBe('denied');
    expect(tunnelRejectionReason('ETIMEDOUT')).toBe('timeout');
    expect(tunnelRejectionReason('bad-magic')).toBe('bad_request');
    expect(tunnelRejectionReason('shutting-down')).toBeUndefined();
    expect(tunnelRejectionReason('ECLOSED')).toBeUndefined();
  });

  it('gives any string one of the four reasons or none, never throwing', () => {
    fc.assert(
      fc.property(fc.string(), (text) => {
        for (const reason of [proxyHandshakeFailure(text), tunnelRejectionReason(text)]) {
          expect(reason === undefined || REASONS.includes(reason)).toBe(true);
        }
      }),
    );
  });
});

describe('metricsExposure', () => {
  it('allows loopback, and beyond it only when open', () => {
    expect(metricsExposure({ host: '127.0.0.1', port: 9464 }, false)).toBeNull();
    expect(metricsExposure({ host: '::1', port: 9464 }, undefined)).toBeNull();
    expect(metricsExposure({ host: '0.0.0.0', port: 9464 }, false)).toContain('--metrics 0.0.0.0:9464 is beyond loopback');
    expect(metricsExposure({ host: '::', port: 9464 }, false)).toContain('--open');
    expect(metricsExposure({ host: '0.0.0.0', port: 9464 }, true)).toBeNull();
  });
});

/** A worker as the supervisor sees it: answers metrics requests with `registry`'s JSON, or never. */
function fakeWorker(metrics: ServiceMetrics | undefined): ChildProcess {
  const child = new EventEmitter() as EventEmitter & { connected: boolean; send(message: { type: string; id: number }): boolean };
  child.connected = true;
  child.send = (message) => {
    if (metrics && message.type === 'metrics-request') {
      void metrics.registry.getMetricsAsJSON().then((json) => child.emit('message', { type: 'metrics', id: message.id, metrics: json }));
    }
    return true;
  };
  return child as unknown as ChildProcess;
}

describe('workersMetrics', () => {
  it('sums the workers that answer, and says how many did', async () => {
    const one = metricsOf();
    const two = metricsOf();
    one.connectionEnded({ outcome: 'eof', durationMs: 10 });
    two.connectionEnded({ outcome: 'eof', durationMs: 20 });
    two.connectionEnded({ outcome: 'reset', durationMs: 30 });
    const text = await workersMetrics([fakeWorker(one), fakeWorker(two), fakeWorker(undefined)], 100);
    expect(sum(text, 'splicer_workers_scraped')).toBe(2);
    expect(sum(text, 'splicer_workers')).toBe(3);
    expect(sum(text, 'splicer_connections_total', { service: 'proxy', outcome: 'eof' })).toBe(2);
    expect(sum(text, 'splicer_connections_total', { outcome: 'reset' })).toBe(1);
    expect(sum(text, 'splicer_connection_duration_seconds_count')).toBe(3);
  });

  it('answers with no worker at all', async () => {
    const text = await workersMetrics([], 100);
    expect(sum(text, 'splicer_workers_scraped')).toBe(0);
  });
});
