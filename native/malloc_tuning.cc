#include "malloc_tuning.h"

#include <climits>

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace splicer {

bool SetTrimThreshold(size_t bytes) {
#ifdef __GLIBC__
  if (bytes > static_cast<size_t>(INT_MAX)) return false;
  return mallopt(M_TRIM_THRESHOLD, static_cast<int>(bytes)) == 1;
#else
  (void)bytes;
  return false;
#endif
}

}  // namespace splicer
