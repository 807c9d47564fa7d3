// The V8 heap sizing of a long-running splicer process.
import v8 from 'node:v8';

/**
 * Keeps V8's young generation at its initial size (a 1 MiB semi-space) instead of letting it
 * double up to 16 MiB when objects survive scavenges. A burst of handshakes is what makes it grow,
 * and a grown young generation is never given back: with 9,800 idle tunnels it held 32 MiB, about
 * 3.3 KB a tunnel, against about 0.1 KB held at rest with this (bench:proxy's idle test). The cost
 * per connection measured the same within noise: a handshake's objects die young, so a smaller
 * young generation is scavenged more often but each scavenge copies no more. Set at startup, before
 * the services allocate; the flag is read each time V8 would grow the space. Only the CLI sets it:
 * a library must not change its host's heap.
 */
export function keepYoungGenerationSmall(): void {
  v8.setFlagsFromString('--semi-space-growth-factor=1');
}
