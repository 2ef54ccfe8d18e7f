/* XXH64 from Debian's libxxhash (libxxhash-dev). XXH_STATIC_LINKING_ONLY exposes the layout of
   XXH64_state_t, so that a streaming state is a plain value Swift can hold and copy. */
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
