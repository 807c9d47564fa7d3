// Recording into a pcap file through the splice engine's writer thread. Pairs on the splice
// engine record their payload there without it entering JS (SpliceForwardOptions.record);
// connections on the JS path write the records they build with write(). Both go through the
// same queue, so every record lands whole and in the order it was queued.
//
// fd ownership: openNativePcap opens the file, writes the global header, hands the engine a
// dup and closes its own fd. From then on only the engine's writer thread writes the file, and
// closes it after close() (or at engine close).
import fs from 'node:fs';
import { PCAP_GLOBAL_HEADER } from '../../pcap/tcp-conversation.js';
import type { SpliceEngine } from './engine.js';
import type { NativeRecorder } from './recorders.js';

export interface NativePcapOptions {
  /**
   * A write error (ENOSPC, EPIPE...) stopped the recording: nothing more reaches the file, pairs
   * recording into it report `recordingDropped`, and close() rejects with the same error.
   */
  onError?: (err: Error) => void;
}

/** One pcap file written by a splice engine. */
export class NativePcapSink {
  #writesDropped = 0;

  /** @internal Made by openNativePcap. */
  constructor(
    readonly engine: SpliceEngine,
    readonly path: string,
    /** @internal What SpliceEngine.forward() records into. */
    readonly recorder: NativeRecorder,
  ) {}

  /**
   * Queues whole records (from TcpConversation). Never blocks: false means they were dropped,
   * because the queue is full (the file is slower than the traffic), the recording failed, or
   * the sink is closing. A conversation whose records were dropped is broken from there on.
   */
  write(records: Buffer): boolean {
    const queued = this.recorder.write(records);
    if (!queued) this.#writesDropped++;
    return queued;
  }

  /** write() calls that dropped their records. */
  get writesDropped(): number {
    return this.#writesDropped;
  }

  /** The write error that stopped the recording, if one did. */
  get error(): Error | undefined {
    return this.recorder.error;
  }

  get closed(): boolean {
    return this.recorder.closed;
  }

  /**
   * Resolves once every queued record is in the file and the file is closed. Pairs still
   * recording into it are waited for (end or release them first). Rejects with the write error
   * that stopped the recording, or with ERR_PCAP_INCOMPLETE when the engine closed before the
   * file took every record (a FIFO nobody reads, say). Idempotent.
   */
  close(): Promise<void> {
    return this.recorder.close();
  }
}

/**
 * Creates (truncates) `path`, writes the pcap global header, and opens it for `engine`'s
 * writer thread. A FIFO is opened without blocking: with no reader it fails with ENXIO.
 */
export async function openNativePcap(engine: SpliceEngine, path: string, options: NativePcapOptions = {}): Promise<NativePcapSink> {
  const { O_WRONLY, O_CREAT, O_TRUNC, O_NONBLOCK } = fs.constants;
  // Not O_APPEND: splice() into a file opened for appending fails (the writer would copy instead).
  const handle = await fs.promises.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NONBLOCK, 0o644);
  try {
    const { bytesWritten } = await handle.write(PCAP_GLOBAL_HEADER);
    if (bytesWritten !== PCAP_GLOBAL_HEADER.length) throw Object.assign(new Error(`short write of the pcap header to ${path}`), { code: 'EIO' });
    return new NativePcapSink(engine, path, engine.openRecorder(handle.fd, options.onError));
  } finally {
    await handle.close();
  }
}
