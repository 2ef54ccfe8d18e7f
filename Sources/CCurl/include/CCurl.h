#ifndef IDX_CCURL_H
#define IDX_CCURL_H
/* HTTP(S) GET through libcurl, resolved at run time with dlopen/dlsym: linking
   libcurl (or Foundation's FoundationNetworking, which links it) loads ~25
   shared libraries (TLS, Kerberos, LDAP, ...) into every idx process, about
   12 ms of start-up; this way only a run that downloads pays for them.
   curl_shim.c takes curl's constants and prototypes from <curl/curl.h>
   (libcurl4-openssl-dev) and needs libcurl 7.83 or newer at run time
   (curl_easy_header). */
#include <stddef.h>
#include <stdint.h>

/* What the response callback returns instead of a body offset (>= 0). */
enum {
    IDX_CURL_SKIP_BODY = -1, /* read and discard the body */
    IDX_CURL_ABORT = -2,     /* stop the transfer: idx_curl_get returns IDX_CURL_ABORTED */
};

/* Results of idx_curl_get. */
enum {
    IDX_CURL_OK = 0,
    IDX_CURL_NOT_LOADED = -1, /* libcurl could not be loaded (reason in `error`) */
    IDX_CURL_FAILED = 1,      /* the transfer failed (curl's reason in `error`) */
    IDX_CURL_ABORTED = 2,     /* a callback asked to stop */
};

/* Called once with the final response's status and header fields as curl_easy_nextheader
   reads them (1xx and followed 3xx responses are not passed), also when there is no body:
   `fields` holds `fields_length` bytes of NUL-terminated strings, name then value for each
   field in the order received (values trimmed by curl). Returns the offset at which the
   caller stores the body (handed back to on_body), IDX_CURL_SKIP_BODY or IDX_CURL_ABORT. */
typedef int64_t (*idx_curl_response_fn)(void *context, long status, const char *fields, size_t fields_length);
/* Called with each piece of the body and the offset where it belongs; returns
   0 to go on, anything else to abort. */
typedef int (*idx_curl_body_fn)(void *context, int64_t offset, const char *bytes, size_t length);

/* Loads libcurl (libcurl.so.4, then libcurl.so) and runs curl_global_init,
   once per process; later calls return the first outcome. On failure writes a
   reason into `error`. */
int idx_curl_load(char *error, size_t error_length);

/* GET `url`, following redirects, without compressed encodings. `range` is
   the value of a Range header without "bytes=" (e.g. "1000-"), or NULL.
   `connect_timeout` bounds the connection set-up; a transfer that moves no
   byte for `idle_timeout` seconds fails (both in seconds, <= 0 for none).
   Loads libcurl on first use. */
int idx_curl_get(const char *url, const char *range, double connect_timeout, double idle_timeout,
                 idx_curl_response_fn on_response, idx_curl_body_fn on_body, void *context,
                 char *error, size_t error_length);

#endif
