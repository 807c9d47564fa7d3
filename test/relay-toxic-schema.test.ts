import { describe, expect, it } from 'vitest';
import { parseStrictToxic, parseToxic, toxicJson, ToxicError } from '../src/relay/toxics.js';

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
    ['non-numeric toxicity', { type: 'latency', toxicity: '1' }, /^toxicity: /],
    ['negative latency', { type: 'latency', attributes: { latency: -1 } }, /^attributes\.latency: .*negative/],
    ['fractional ms', { type: 'timeout', attributes: { timeout: 1.5 } }, /^attributes\.timeout: .*whole/],
    ['string rate', { type: 'bandwidth', attributes: { rate: '100' } }, /^attributes\.rate: /],
    ['bitflip rate > 1', { type: 'bitflip', attributes: { rate: 2 } }, /^attributes\.rate: .*between 0 and 1/],
    ['bitflip without rate', { type: 'bitflip' }, /^attributes: .*rate/],
    ['stall without duration', { type: 'stall', attributes: { after: 10 } }, /^attributes\.duration: /],
    ['perChunk limit_data', { type: 'limit_data', perChunk: true, attributes: { bytes: 1 } }, /^perChunk: /],
    ['non-boolean perChunk', { type: 'latency', perChunk: 'yes' }, /^perChunk: /],
  ];
  it.each(rejects)('rejects %s, naming the field', (_label, input, message) => {
    expect(() => parseToxic(input)).toThrow(ToxicError);
    expect(() => parseToxic(input)).toThrow(message);
    expect(() => parseStrictToxic(input)).toThrow(message);
  });

  it('takes what Toxiproxy takes: null as absent, unknown fields, any case of stream, any toxicity, noop', () => {
    expect(parseToxic({ type: 'latency', name: null, stream: null, toxicity: null, attributes: null })).toEqual(parseToxic({ type: 'latency' }));
    expect(parseToxic({ type: 'latency', attributes: { latency: null, jitter: 3 } }).attributes).toEqual({ latency: 0, jitter: 3 });
    expect(parseToxic({ type: 'latency', extra: 1, attributes: { latency: 5, foo: 1 } })).toEqual(parseToxic({ type: 'latency', attributes: { latency: 5 } }));
    expect(parseToxic({ type: 'latency', stream: 'UpStream' })).toMatchObject({ stream: 'upstream', name: 'latency_upstream' });
    expect(parseToxic({ type: 'latency', toxicity: 1.5 }).toxicity).toBe(1.5);
    expect(parseToxic({ type: 'latency', toxicity: -1 }).toxicity).toBe(-1);
    expect(parseToxic({ type: 'slicer', attributes: { average_size: 8, size_variation: 8 } }).attributes).toEqual({ average_size: 8, size_variation: 8, delay: 0 });
    expect(parseToxic({ type: 'slicer' }).attributes).toEqual({ average_size: 0, size_variation: 0, delay: 0 });
    expect(parseToxic({ type: 'noop' })).toEqual({ name: 'noop_downstream', type: 'noop', stream: 'downstream', toxicity: 1, attributes: {} });
    expect(parseStrictToxic({ type: 'noop', toxicity: null })).toMatchObject({ type: 'noop', toxicity: 1 });
  });

  const strictRejects: [string, unknown, RegExp][] = [
    ['toxicity > 1', { type: 'latency', toxicity: 1.5 }, /^toxicity: /],
    ['stream in capitals', { type: 'latency', stream: 'UpStream' }, /^stream: /],
    ['unknown field', { type: 'latency', extra: 1 }, /extra/],
    ['misspelt attribute', { type: 'slow_close', attributes: { delay_ms: 5 } }, /^attributes: .*delay_ms/],
    ['slicer without size', { type: 'slicer' }, /^attributes\.average_size: /],
    ['slicer variation ≥ average', { type: 'slicer', attributes: { average_size: 8, size_variation: 8 } }, /^attributes\.size_variation: /],
    ['noop with an attribute', { type: 'noop', attributes: { x: 1 } }, /^attributes: .*x/],
  ];
  it.each(strictRejects)('strict: rejects %s, which Toxiproxy takes', (_label, input, message) => {
    expect(() => parseToxic(input)).not.toThrow();
    expect(() => parseStrictToxic(input)).toThrow(message);
  });

  it("writes a toxic's keys in Toxiproxy's order", () => {
    const toxic = parseToxic({ toxicity: 0.5, type: 'latency', name: 'lag', attributes: { jitter: 1 }, stream: 'upstream' });
    expect(JSON.stringify(toxicJson(toxic))).toBe('{"attributes":{"latency":0,"jitter":1},"name":"lag","type":"latency","stream":"upstream","toxicity":0.5}');
  });
});
