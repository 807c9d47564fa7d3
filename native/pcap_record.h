// pcap record headers for one synthesized TCP conversation: a port of the parts of
// TcpConversation (src/pcap/tcp-conversation.ts) that a spliced pair needs once the handshake is written
// (data headers, FIN, RST). JS and C++ hand the same conversation back and forth as its state,
// so both must cut, number and acknowledge segments the same way (test/splice-record.test.ts
// replays the native records through pcap.ts byte for byte). A data segment's TCP checksum is
// left 0 because its payload never passes through here (see the top of pcap.ts).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace splicer {

// Largest TCP payload per segment; MAX_SEGMENT in pcap.ts.
constexpr size_t kMaxSegment = 65495;

struct ConversationHalf {
  uint8_t ip[16] = {};
  uint16_t port = 0;
  uint32_t next = 0;   // sequence number of the next byte (or FIN) this side sends
  uint32_t acked = 0;  // highest acknowledgment the other side has sent for it
  uint16_t ipId = 1;
  bool finished = false;
};

// Side 0 is the client (sent the SYN), side 1 the server.
class Conversation {
 public:
  bool ipv4 = true;
  ConversationHalf half[2];
  bool reset = false;

  // Headers of one PSH/ACK segment carrying `length` (1..kMaxSegment) bytes from `from`, after a
  // pure ACK from the other side when the unacknowledged bytes would reach the window's edge.
  // The payload follows in the file.
  void DataHeader(int from, size_t length, uint64_t timestampUs, std::string& out);
  // FIN/ACK from `from` and the other side's ACK of it.
  void Fin(int from, uint64_t timestampUs, std::string& out);
  // RST/ACK from `from`; the conversation is over.
  void Reset(int from, uint64_t timestampUs, std::string& out);
  // Whether `from` may still send data or a FIN.
  bool CanSend(int from) const { return !reset && !half[from].finished; }

 private:
  void Segment(int from, uint8_t flags, size_t payloadLength, uint64_t timestampUs, std::string& out);
};

// Microseconds since the Unix epoch: pcap timestamps are wall-clock time.
uint64_t WallClockUs();

}  // namespace splicer
