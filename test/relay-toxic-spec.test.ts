// The command line's short form of a toxic, parsed without sockets.
import { describe, expect, it } from 'vitest';
import { parseToxicSpec } from '../src/relay/toxic-spec.js';
import { ToxicError } from '../src/relay/toxics.js';

describe('parseToxicSpec', () => {
  it('reads TYPE@STREAM:KEY=VALUE with envelope keys apart from attributes', () => {
    expect(parseToxicSpec('bitflip@upstream:rate=0.001,toxicity=0.5,perChunk=true,name=flip')).toEqual({
      name: 'flip',
      type: 'bitflip',
      stream: 'upstream',
      toxicity: 0.5,
      perChunk: true,
      attributes: { rate: 0.001 },
    });
  });

  it('defaults as Toxiproxy: downstream, toxicity 1, name TYPE_STREAM, zero attributes', () => {
    expect(parseToxicSpec('latency')).toEqual({ name: 'latency_downstream', type: 'latency', stream: 'downstream', toxicity: 1, attributes: { latency: 0, jitter: 0 } });
  });

  it('takes Toxiproxy JSON as it is', () => {
    expect(parseToxicSpec('{"type":"slow_close","stream":"upstream","attributes":{"delay":50}}').attributes).toEqual({ delay: 50 });
  });

  it.each([
    ['latency:latency', /expected KEY=VALUE/],
    ['latency:latency=abc', /attributes.latency/],
    ['latency@sideways', /stream/],
    ['Latency', /expected TYPE/],
    ['{"type":', /not valid JSON/],
    ['latency:latencyy=5', /latencyy/],
  ])('%s is refused with a message naming the problem', (spec, message) => {
    expect(() => parseToxicSpec(spec)).toThrow(ToxicError);
    expect(() => parseToxicSpec(spec)).toThrow(message);
  });
});
