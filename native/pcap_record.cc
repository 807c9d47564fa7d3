#include "pcap_record.h"

#include <ctime>

namespace splicer {

namespace {

constexpr uint8_t kFin = 0x01;
constexpr uint8_t kRst = 0x04;
constexpr uint8_t kPsh = 0x08;
constexpr uint8_t kAck = 0x10;
// Advertised by both sides, no window scaling: also the most bytes in flight (WINDOW in pcap.ts).
constexpr uint32_t kWindow = 65535;
// MACS in pcap.ts: client 02:00:00:00:00:01, server 02:00:00:00:00:02.
constexpr uint8_t kMac[2][6] = {{2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2}};

void Le32(uint8_t* at, uint32_t value) {
  at[0] = static_cast<uint8_t>(value);
  at[1] = static_cast<uint8_t>(value >> 8);
  at[2] = static_cast<uint8_t>(value >> 16);
  at[3] = static_cast<uint8_t>(value >> 24);
}

void Be16(uint8_t* at, uint32_t value) {
  at[0] = static_cast<uint8_t>(value >> 8);
  at[1] = static_cast<uint8_t>(value);
}

void Be32(uint8_t* at, uint32_t value) {
  Be16(at, value >> 16);
  Be16(at + 2, value & 0xffff);
}

// One's complement sum of big-endian 16-bit words (an even `length`), not folded.
uint32_t WordSum(const uint8_t* data, size_t length, uint32_t sum = 0) {
  for (size_t i = 0; i < length; i += 2) sum += (static_cast<uint32_t>(data[i]) << 8) | data[i + 1];
  return sum;
}

uint16_t Checksum(uint32_t sum) {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum & 0xffff);
}

}  // namespace

uint64_t WallClockUs() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000ull + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

void Conversation::DataHeader(int from, size_t length, uint64_t timestampUs, std::string& out) {
  const ConversationHalf& sender = half[from];
  uint32_t inFlight = sender.next - sender.acked;
  // No real sender goes past the window, and Wireshark flags a segment ending exactly on its
  // edge as "TCP Window Full": the receiver's ACK (which the relay's sockets did send) goes first.
  if (inFlight > 0 && static_cast<uint64_t>(inFlight) + length >= kWindow) Segment(1 - from, kAck, 0, timestampUs, out);
  Segment(from, kPsh | kAck, length, timestampUs, out);
}

void Conversation::Fin(int from, uint64_t timestampUs, std::string& out) {
  Segment(from, kFin | kAck, 0, timestampUs, out);
  half[from].finished = true;
  Segment(1 - from, kAck, 0, timestampUs, out);
}

void Conversation::Reset(int from, uint64_t timestampUs, std::string& out) {
  Segment(from, kRst | kAck, 0, timestampUs, out);
  reset = true;
}

void Conversation::Segment(int from, uint8_t flags, size_t payloadLength, uint64_t timestampUs, std::string& out) {
  ConversationHalf& src = half[from];
  ConversationHalf& dst = half[1 - from];
  const size_t ipLength = ipv4 ? 20 : 40;
  const size_t tcpLength = 20;  // no SYN is ever written here, so no MSS option
  const size_t frameLength = 14 + ipLength + tcpLength + payloadLength;
  const size_t start = out.size();
  out.resize(start + 16 + frameLength - payloadLength);
  uint8_t* r = reinterpret_cast<uint8_t*>(&out[start]);

  Le32(r, static_cast<uint32_t>(timestampUs / 1000000));
  Le32(r + 4, static_cast<uint32_t>(timestampUs % 1000000));
  Le32(r + 8, static_cast<uint32_t>(frameLength));
  Le32(r + 12, static_cast<uint32_t>(frameLength));

  for (int i = 0; i < 6; i++) {
    r[16 + i] = kMac[1 - from][i];
    r[22 + i] = kMac[from][i];
  }
  Be16(r + 28, ipv4 ? 0x0800 : 0x86dd);

  uint8_t* ip = r + 30;
  if (ipv4) {
    ip[0] = 0x45;
    Be16(ip + 2, static_cast<uint32_t>(ipLength + tcpLength + payloadLength));
    Be16(ip + 4, src.ipId);
    src.ipId = static_cast<uint16_t>(src.ipId + 1);
    Be16(ip + 6, 0x4000);  // DF, as Linux sets it on TCP
    ip[8] = 64;
    ip[9] = 6;
    for (int i = 0; i < 4; i++) {
      ip[12 + i] = src.ip[i];
      ip[16 + i] = dst.ip[i];
    }
    Be16(ip + 10, Checksum(WordSum(ip, 20)));
  } else {
    Be32(ip, 0x60000000);
    Be16(ip + 4, static_cast<uint32_t>(tcpLength + payloadLength));
    ip[6] = 6;
    ip[7] = 64;
    for (int i = 0; i < 16; i++) {
      ip[8 + i] = src.ip[i];
      ip[24 + i] = dst.ip[i];
    }
  }

  uint8_t* tcp = ip + ipLength;
  Be16(tcp, src.port);
  Be16(tcp + 2, dst.port);
  Be32(tcp + 4, src.next);
  if (flags & kAck) {
    Be32(tcp + 8, dst.next);
    dst.acked = dst.next;
  }
  tcp[12] = static_cast<uint8_t>((tcpLength / 4) << 4);
  tcp[13] = flags;
  Be16(tcp + 14, kWindow);
  if (payloadLength == 0) {
    // Control segments get a real checksum, as pcap.ts gives them; a data segment's stays 0:
    // its payload is spliced into the file and never seen here.
    size_t addressLength = ipv4 ? 4 : 16;
    uint32_t sum = WordSum(src.ip, addressLength, WordSum(dst.ip, addressLength)) + 6 + tcpLength;
    Be16(tcp + 16, Checksum(WordSum(tcp, tcpLength, sum)));
  }

  src.next += static_cast<uint32_t>(payloadLength) + ((flags & kFin) ? 1 : 0);
}

}  // namespace splicer
