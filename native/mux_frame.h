// yamux frame headers as src/mux/frame.ts reads and writes them: 12 bytes, big-endian, no I/O.
#pragma once

#include <cstddef>
#include <cstdint>

namespace splicer {
namespace mux {

constexpr size_t kHeaderSize = 12;
constexpr uint8_t kVersion = 0;

enum FrameType : uint8_t { kData = 0, kWindowUpdate = 1, kPing = 2, kGoAway = 3 };
enum Flag : uint16_t { kSyn = 1, kAck = 2, kFin = 4, kRst = 8 };
enum GoAwayCode : uint32_t { kNormal = 0, kProtocolError = 1, kInternalError = 2 };

constexpr uint32_t kInitialWindow = 256 * 1024;
constexpr uint32_t kMaxStreamId = 0xffffffffu;

struct Header {
  uint8_t version;
  uint8_t type;
  uint16_t flags;
  uint32_t streamId;
  uint32_t length;
};

inline void EncodeHeader(uint8_t* out, uint8_t type, uint16_t flags, uint32_t streamId, uint32_t length) {
  out[0] = kVersion;
  out[1] = type;
  out[2] = static_cast<uint8_t>(flags >> 8);
  out[3] = static_cast<uint8_t>(flags);
  for (int i = 0; i < 4; i++) {
    out[4 + i] = static_cast<uint8_t>(streamId >> (24 - 8 * i));
    out[8 + i] = static_cast<uint8_t>(length >> (24 - 8 * i));
  }
}

// The rule a header broke, or nullptr: the same checks, in the same order, as decodeHeader().
inline const char* DecodeHeader(const uint8_t* in, uint32_t maxDataLength, Header* out) {
  out->version = in[0];
  out->type = in[1];
  out->flags = static_cast<uint16_t>((in[2] << 8) | in[3]);
  out->streamId = (uint32_t{in[4]} << 24) | (uint32_t{in[5]} << 16) | (uint32_t{in[6]} << 8) | in[7];
  out->length = (uint32_t{in[8]} << 24) | (uint32_t{in[9]} << 16) | (uint32_t{in[10]} << 8) | in[11];
  if (out->version != kVersion) return "ERR_MUX_BAD_VERSION";
  if (out->type > kGoAway) return "ERR_MUX_BAD_TYPE";
  if (out->type == kData && out->length > maxDataLength) return "ERR_MUX_FRAME_TOO_LARGE";
  bool sessionFrame = out->type == kPing || out->type == kGoAway;
  if (sessionFrame != (out->streamId == 0)) return "ERR_MUX_BAD_STREAM_ID";
  return nullptr;
}

}  // namespace mux
}  // namespace splicer
