import { describe, expect, it } from 'vitest';
import { parseToxic, ToxicError } from '../src/relay/toxics.js';

describe('ToxicSchema', () => {
  it("fills Toxiproxy's defaults: downstream, toxicity 1, name type_stream, zero attributes", () => {
    expect(parseToxic({ type: 'latency' })).toEqual({
      name: 'latency_downstream',
      type: 'latency',
      stream: 'downstream',
      toxicity: 1,
      attributes: { latency: 0, jitter: 0 },
    });
    expect(parseToxic({ type: 'timeout', stream: 'upstream', attributes: { timeout: 5 } }).name).toBe('timeout_upstream');
    expect(parseToxic({ name: 'mine', type: 'bandwidth' }).name).toBe('mine');
    expect(parseToxic({ type: 'bandwidth' }).attributes).toEqual({ rate: 0 });
    expect(parseToxic({ type: 'slow_close' }).attributes).toEqual({ delay: 0 });
    expect(parseToxic({ type: 'reset_peer' }).attributes).toEqual({ timeout: 0 });
    expect(parseToxic({ type: 'limit_data' }).attributes).toEqual({ bytes: 0 });
    expect(parseToxic({ type: 'slicer', attributes: { average_size: 64 } }).attributes).toEqual({
      average_size: 64,
      size_variation: 0,
      delay: 0,
    });
    expect(parseToxic({ type: 'stall', attributes: { duration: 10 } }).attributes).toEqual({ after: 0, duration: 10 });
    expect(parseToxic({ type: 'bitflip', toxicity: 0.25, perChunk: true, attributes: { rate: 1e-4 } })).toMatchObject({
      toxicity: 0.25,
      perChunk: true,
      attributes: { rate: 1e-4 },
    });
  });

  it('accepts the JSON a Toxiproxy client sends', () => {
    const body = JSON.parse('{"name":"lag","type":"latency","stream":"upstream","toxicity":0.5,"attributes":{"latency":1000,"jitter":100}}');
    expect(parseToxic(body)).toEqual({ ...body });
  });

  const rejects: [string, unknown, RegExp][] = [
    ['unknown type', { type: 'explode' }, /^type: /],
    ['missing type', {}, /^type: /],
    ['bad stream', { type: 'latency', stream: 'sideways' }, /^stream: .*upstream/],
    ['toxicity > 1', { type: 'latency', toxicity: 1.5 }, /^toxicity: /],
    ['negative latency', { type: 'latency', attributes: { latency: -1 } }, /^attributes\.latency: .*negative/],
    ['fractional ms', { type: 'timeout', attributes: { timeout: 1.5 } }, /^attributes\.timeout: .*whole/],
    ['string rate', { type: 'bandwidth', attributes: { rate: '100' } }, /^attributes\.rate: /],
    ['misspelt attribute', { type: 'slow_close', attributes: { delay_ms: 5 } }, /^attributes: .*delay_ms/],
    ['slicer without size', { type: 'slicer' }, /^attributes\.average_size: /],
    ['slicer variation ≥ average', { type: 'slicer', attributes: { average_size: 8, size_variation: 8 } }, /^attributes\.size_variation: /],
    ['bitflip rate > 1', { type: 'bitflip', attributes: { rate: 2 } }, /^attributes\.rate: .*between 0 and 1/],
    ['bitflip without rate', { type: 'bitflip' }, /^attributes: .*rate/],
    ['stall without duration', { type: 'stall', attributes: { after: 10 } }, /^attributes\.duration: /],
    ['perChunk limit_data', { type: 'limit_data', perChunk: true, attributes: { bytes: 1 } }, /^perChunk: /],
    ['non-boolean perChunk', { type: 'latency', perChunk: 'yes' }, /^perChunk: /],
  ];
  it.each(rejects)('rejects %s, naming the field', (_label, input, message) => {
    expect(() => parseToxic(input)).toThrow(ToxicError);
    expect(() => parseToxic(input)).toThrow(message);
  });
});
