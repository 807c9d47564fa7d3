// Reading pcap recordings back: the in-memory reader (relay-pcap-records.ts) and tshark runners.
import { execFileSync } from 'node:child_process';

export * from './relay-pcap-records.js';

/** tshark's stdout; its stderr (e.g. the running-as-root notice) is dropped unless it fails. */
export function tshark(args: string[]): string {
  return execFileSync('tshark', args, { encoding: 'utf8', maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'pipe'] });
}

export interface FollowedStream {
  node0: string;
  node1: string;
  /** Node 0 → node 1 (the client, which sent the SYN) and back. */
  client: Buffer;
  server: Buffer;
}

/**
 * Parses `-z follow,tcp,raw,N` output: hex lines, unindented from node 0, indented by a tab
 * from node 1. tshark prints several follows in reverse order, so callers key by node.
 */
export function parseFollow(output: string): FollowedStream[] {
  const streams: FollowedStream[] = [];
  const hex: { client: string[]; server: string[] }[] = [];
  for (const line of output.split('\n')) {
    const node = /^Node ([01]): (.*)$/.exec(line);
    if (node?.[1] === '0') {
      streams.push({ node0: node[2], node1: '', client: Buffer.alloc(0), server: Buffer.alloc(0) });
      hex.push({ client: [], server: [] });
    } else if (node) streams[streams.length - 1].node1 = node[2];
    else if (/^\t?[0-9a-f]+$/.test(line)) hex[hex.length - 1][line.startsWith('\t') ? 'server' : 'client'].push(line.trim());
  }
  streams.forEach((stream, i) => {
    stream.client = Buffer.from(hex[i].client.join(''), 'hex');
    stream.server = Buffer.from(hex[i].server.join(''), 'hex');
  });
  return streams;
}
