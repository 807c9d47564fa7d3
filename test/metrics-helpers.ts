// Scraping the metrics endpoint as Prometheus does, and reading samples out of its text format.
import { spawnSync } from 'node:child_process';
import http from 'node:http';

export interface Reply {
  status: number;
  contentType: string;
  body: string;
}

/** GET (or another method) on 127.0.0.1:port, at most `timeoutMs`. */
export function get(port: number, path: string, method = 'GET', timeoutMs = 10_000): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type']), body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no reply from :${port}${path} within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** The /metrics text; fails on any status but 200. */
export async function scrape(port: number): Promise<string> {
  const reply = await get(port, '/metrics');
  if (reply.status !== 200) throw new Error(`/metrics answered ${reply.status}: ${reply.body}`);
  return reply.body;
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Every sample line of an exposition text (comments skipped). */
export function samples(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]!] = pair[2]!;
    out.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return out;
}

/** The sum of the samples named `name` whose labels include `labels`; 0 when there is none. */
export function sum(text: string, name: string, labels: Record<string, string> = {}): number {
  return samples(text)
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((total, s) => total + s.value, 0);
}

/** Whether a series of that name is in the text at all. */
export const has = (text: string, name: string) => samples(text).some((s) => s.name === name);

/** `promtool check metrics` on the text: its exit status and what it said. */
export function promtoolCheck(text: string): { status: number | null; output: string } {
  const result = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 20_000 });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}
