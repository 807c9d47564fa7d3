// The C allocator's settings for a long-running splicer process (glibc only).
#pragma once

#include <cstddef>

namespace splicer {

// Keeps up to `bytes` of freed memory at the top of the heap instead of handing it back to the
// kernel at once (mallopt M_TRIM_THRESHOLD). Returns false where the C library has no such
// setting (musl) or refused it.
bool SetTrimThreshold(size_t bytes);

}  // namespace splicer
