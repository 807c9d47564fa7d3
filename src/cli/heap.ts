// The V8 heap sizing and the C allocator settings of a long-running splicer process.
import v8 from 'node:v8';
import { loadNative } from '../engine/splice/native.js';

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

/** Freed C heap memory the CLI keeps for reuse (see keepFreedMemoryForReuse). */
export const TRIM_THRESHOLD_BYTES = 32 * 1024 * 1024;

/**
 * Has glibc keep up to 32 MiB of freed memory for reuse instead of handing it back to the kernel
 * as soon as 128 KiB are free at the top of the heap. The JS data paths (mux, TLS, the JS engine,
 * the relay's toxics) read into fresh 64 KiB buffers that V8 frees tens of MiB at a time; with
 * glibc's default, each batch went back to the kernel and the next reads faulted it in again, page
 * by page. Through two `forward` processes chained over `mux://` that was most of their CPU: 7.2
 * s per GiB, against 2.9 with this (the two forwarders together, same run). The cost is up to
 * 32 MiB more resident after a burst. An operator's own MALLOC_TRIM_THRESHOLD_ wins (glibc reads
 * it at startup); without the addon, or off glibc, nothing changes. Only the CLI sets it: a
 * library must not change its host's allocator.
 */
export function keepFreedMemoryForReuse(env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.MALLOC_TRIM_THRESHOLD_ !== undefined) return false;
  const { binding } = loadNative();
  return binding ? binding.setTrimThreshold(TRIM_THRESHOLD_BYTES) : false;
}
