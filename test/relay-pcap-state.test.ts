// TcpConversation.state() / fromState(): a conversation crosses to the native recorder and back
// as plain data, and goes on exactly where it was.
import { describe, expect, it } from 'vitest';
import { ConversationStateError, MAX_SEGMENT, TcpConversation, type ConversationState } from '../src/pcap/tcp-conversation.js';

const CLIENT = { address: '::ffff:10.1.2.3', port: 40001 };
const SERVER = { address: '192.0.2.10', port: 9001 };
const TS = 1_700_000_000_000_000n;

/** The same script of records from both conversations must give the same bytes. */
function play(conv: TcpConversation): Buffer {
  return Buffer.concat([
    conv.data('client', Buffer.alloc(40, 1), TS + 1n),
    conv.data('client', Buffer.alloc(MAX_SEGMENT, 2), TS + 2n), // reaches the window's edge: an ACK first
    conv.data('server', Buffer.alloc(70_000, 3), TS + 3n),
    conv.dataHeader('client', 1000, TS + 4n),
    conv.fin('client', TS + 5n),
    conv.data('server', Buffer.alloc(5, 4), TS + 6n),
    conv.reset('server', TS + 7n),
  ]);
}

describe('TcpConversation.state() and fromState()', () => {
  it('a conversation rebuilt from its state writes the same records as the original', () => {
    const original = new TcpConversation(CLIENT, SERVER, { clientIsn: 0xffff_fff0, serverIsn: 1234 });
    original.handshake(TS);
    original.data('client', Buffer.alloc(30_000), TS);
    const state = original.state();
    const copy = TcpConversation.fromState(JSON.parse(JSON.stringify(state)) as ConversationState);
    expect(copy.state()).toEqual(state);
    expect(play(copy).equals(play(original))).toBe(true);
    expect(copy.state()).toEqual(original.state());
  });

  it('is plain data: addresses as given, uint32 sequence numbers, the phase', () => {
    const conv = new TcpConversation(CLIENT, SERVER, { clientIsn: 10, serverIsn: 20 });
    expect(conv.state()).toEqual({
      ipv4: true,
      phase: 'new',
      client: { address: CLIENT.address, port: 40001, next: 10, acked: 10, ipId: 1, finished: false },
      server: { address: SERVER.address, port: 9001, next: 20, acked: 20, ipId: 1, finished: false },
    });
    conv.handshake(TS);
    conv.data('client', Buffer.alloc(100), TS);
    conv.fin('client', TS);
    expect(conv.state()).toMatchObject({
      phase: 'open',
      client: { next: 10 + 1 + 100 + 1, acked: 10 + 1 + 100 + 1, ipId: 5, finished: true },
      server: { next: 21, acked: 21, ipId: 3, finished: false },
    });
    expect(structuredClone(conv.state())).toEqual(conv.state());
    const v6 = new TcpConversation({ address: '2001:db8::1', port: 1 }, { address: '2001:db8::2', port: 2 });
    expect(v6.state().ipv4).toBe(false);
  });

  it('keeps the phase: a new conversation still needs its handshake, a closed one refuses data', () => {
    const fresh = TcpConversation.fromState(new TcpConversation(CLIENT, SERVER).state());
    expect(() => fresh.data('client', Buffer.alloc(1), TS)).toThrow(ConversationStateError);
    fresh.handshake(TS);
    const closed = new TcpConversation(CLIENT, SERVER);
    closed.handshake(TS);
    closed.reset('client', TS);
    expect(() => TcpConversation.fromState(closed.state()).data('server', Buffer.alloc(1), TS)).toThrow(ConversationStateError);
    const finished = new TcpConversation(CLIENT, SERVER);
    finished.handshake(TS);
    finished.fin('server', TS);
    expect(() => TcpConversation.fromState(finished.state()).data('server', Buffer.alloc(1), TS)).toThrow(/already sent FIN/);
  });

  it('refuses states that cannot be a conversation', () => {
    const good = new TcpConversation(CLIENT, SERVER).state();
    const bad = (change: (s: ConversationState) => void) => {
      const state = structuredClone(good);
      change(state);
      return () => TcpConversation.fromState(state);
    };
    expect(bad((s) => (s.ipv4 = false))).toThrow(TypeError);
    expect(bad((s) => ((s as { phase: string }).phase = 'half-open'))).toThrow(TypeError);
    expect(bad((s) => (s.client.next = 2 ** 32))).toThrow(RangeError);
    expect(bad((s) => (s.server.acked = -1))).toThrow(RangeError);
    expect(bad((s) => (s.client.ipId = 0x10000))).toThrow(RangeError);
    expect(bad((s) => (s.server.port = 70000))).toThrow(RangeError);
    expect(bad((s) => (s.server.address = '2001:db8::2'))).toThrow(TypeError);
  });
});
