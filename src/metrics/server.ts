// The metrics endpoint: GET /metrics (Prometheus' text format) and GET /healthz, on node:http.
// It listens on loopback unless told it may not (`open`), as the services' own listeners do.
import http from 'node:http';
import { once } from 'node:events';
import { formatHostPort, isLoopback, type HostPort } from '../net/host-port.js';

export interface MetricsServerOptions {
  listen: HostPort;
  /** Allow an address beyond loopback. */
  open?: boolean;
  /** The exposition text, made per scrape. */
  metrics(): Promise<string>;
  contentType: string;
}

/** Why this address may not serve metrics (beyond loopback without `open`), or null. */
export function metricsExposure(listen: HostPort, open: boolean | undefined): string | null {
  if (open || isLoopback(listen.host)) return null;
  return `--metrics ${formatHostPort(listen)} is beyond loopback, where anyone who reaches it can read the metrics; use a loopback address or pass --open`;
}

export class MetricsServer {
  readonly #server: http.Server;
  readonly #options: MetricsServerOptions;

  private constructor(options: MetricsServerOptions) {
    this.#options = options;
    this.#server = http.createServer((req, res) => void this.#handle(req, res));
    // A scraper holds its connection open between scrapes: close() must not wait for it.
    this.#server.keepAliveTimeout = 5_000;
  }

  /** Listens; rejects with the bind error (EADDRINUSE...) or the exposure refusal. */
  static async start(options: MetricsServerOptions): Promise<MetricsServer> {
    const refusal = metricsExposure(options.listen, options.open);
    if (refusal) throw Object.assign(new Error(refusal), { code: 'ERR_METRICS_EXPOSED' });
    const server = new MetricsServer(options);
    server.#server.listen(options.listen.port, options.listen.host);
    await Promise.race([once(server.#server, 'listening'), once(server.#server, 'error').then(([err]) => Promise.reject(err as Error))]);
    return server;
  }

  address(): HostPort {
    const address = this.#server.address();
    if (!address || typeof address !== 'object') throw new Error('the metrics server is not listening');
    return { host: address.address, port: address.port };
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeAllConnections();
    await closed;
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics' && path !== '/healthz') return reply(res, 404, 'not found: try /metrics or /healthz\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return reply(res, 405, `${req.method} is not served here: use GET\n`);
    }
    if (path === '/healthz') return reply(res, 200, 'ok\n');
    try {
      reply(res, 200, await this.#options.metrics(), this.#options.contentType);
    } catch (err) {
      reply(res, 500, `metrics failed: ${(err as Error).message}\n`);
    }
  }
}

function reply(res: http.ServerResponse, status: number, body: string, contentType = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body) });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}
