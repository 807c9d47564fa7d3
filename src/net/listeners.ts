// The listening sockets of a service: bind every address or none, report what
// was bound, and keep accepting when accept() fails (EMFILE, ENFILE).
import net from 'node:net';
import type { HostPort } from './host-port.js';
import type { Logger } from '../logger.js';

export interface ListenersOptions {
  /** Leave new connections unread until the handler reads them (their first bytes stay in the kernel). */
  pauseOnConnect?: boolean;
  logger?: Logger;
}

export class Listeners {
  readonly #servers: net.Server[] = [];
  readonly #onConnection: (socket: net.Socket) => void;
  readonly #options: ListenersOptions;

  constructor(onConnection: (socket: net.Socket) => void, options: ListenersOptions = {}) {
    this.#onConnection = onConnection;
    this.#options = options;
  }

  /** Binds every address; on a failure closes what was bound and rejects. */
  async listen(addresses: readonly HostPort[]): Promise<HostPort[]> {
    try {
      for (const address of addresses) {
        const server = net.createServer(
          { allowHalfOpen: true, pauseOnConnect: this.#options.pauseOnConnect ?? false, noDelay: true },
          this.#onConnection,
        );
        server.on('error', (err) => this.#options.logger?.warn({ err: err.message }, 'accept failed'));
        this.#servers.push(server);
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(address.port, address.host, () => {
            server.off('error', reject);
            resolve();
          });
        });
      }
    } catch (err) {
      await this.close();
      throw err;
    }
    return this.addresses();
  }

  addresses(): HostPort[] {
    return this.#servers.flatMap((server) => {
      const address = server.address();
      return address && typeof address === 'object' ? [{ host: address.address, port: address.port }] : [];
    });
  }

  /**
   * Stops accepting at once; open connections are not touched. The promise settles only
   * when every connection accepted here is gone (net.Server.close semantics): callers
   * that end connections themselves should await it after doing so.
   */
  async close(): Promise<void> {
    await Promise.all(this.#servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  }
}
