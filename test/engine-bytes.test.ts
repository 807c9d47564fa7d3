// The engines' live byte counters (what /metrics reads): bytes of a pair still open are counted
// while it runs, and once it ends the counters have moved by exactly its result's bytes.
import { afterEach, describe, expect, it } from 'vitest';
import { SpliceEngine } from '../src/engine/splice/engine.js';
import { jsEngineBytes } from '../src/engine/js-engine.js';
import * as h from './helpers.js';
import { MiB } from './helpers.js';
import { testEngines } from './policy.js';

afterEach(h.closeAll);

describe.each(testEngines)('the %s engine counts the bytes it moves', (engine) => {
  it('4 MiB down counted while the pair is open; up and down equal the result once it ends', async () => {
    const spliceEngine = engine === 'splice' ? new SpliceEngine() : undefined;
    if (spliceEngine) h.onCleanup(() => void spliceEngine.close());
    const counted = () => (spliceEngine ? { up: spliceEngine.stats().bytesAtoB, down: spliceEngine.stats().bytesBtoA } : { up: jsEngineBytes().aToB, down: jsEngineBytes().bToA });
    const before = counted();

    // The target sends 4 MiB and holds the connection open until the client ends.
    const target = await h.startServer((socket) => {
      socket.on('end', () => socket.end());
      socket.resume();
      h.writeRandom(socket, 11, 4 * MiB, { end: false }).catch(() => {});
    });
    const fwd = await h.startForwarder(target, { engine, spliceEngine });
    const client = await h.connectTo(fwd.port);
    await h.within(h.readBytes(client, 4 * MiB), 30_000, '4 MiB through the open pair');

    const during = counted();
    expect(during.down - before.down).toBe(4 * MiB);
    if (spliceEngine) expect(spliceEngine.stats().pairs).toBe(1);

    const sent = await h.writeRandom(client, 12, 256 * 1024, { end: true });
    const result = await h.within(fwd.result(0), 30_000, 'the pair to end');
    const after = counted();
    expect(result.bytesAtoB).toBe(sent.bytes);
    expect(after.up - before.up).toBe(result.bytesAtoB);
    expect(after.down - before.down).toBe(result.bytesBtoA);
  });
});
