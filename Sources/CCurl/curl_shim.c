#define _GNU_SOURCE
#include "CCurl.h"
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Constants, types and prototypes come from curl's own header (libcurl4-openssl-dev); the
   functions are never linked, only looked up with dlsym into pointers of their declared types.
   CURL_DISABLE_TYPECHECK: curl.h otherwise wraps curl_easy_setopt/getinfo in checking macros,
   which would expand in the __typeof__ below. CURL_DISABLE_DEPRECATION: the bitmask protocol
   options stay the fallback for libcurl before 7.85. */
#define CURL_DISABLE_TYPECHECK
#define CURL_DISABLE_DEPRECATION
#include <curl/curl.h>

#if LIBCURL_VERSION_NUM < 0x075300
#error "idx needs curl.h of libcurl 7.83 or newer (curl_easy_header)"
#endif

static void *library;
static int load_status = -1;
static char load_error[512];
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static __typeof__(curl_global_init) *p_global_init;
static __typeof__(curl_easy_init) *p_init;
static __typeof__(curl_easy_setopt) *p_setopt;
static __typeof__(curl_easy_perform) *p_perform;
static __typeof__(curl_easy_getinfo) *p_getinfo;
static __typeof__(curl_easy_cleanup) *p_cleanup;
static __typeof__(curl_easy_strerror) *p_strerror;
static __typeof__(curl_easy_header) *p_header;
static __typeof__(curl_easy_nextheader) *p_nextheader;

static void load(void) {
    const char *names[] = {"libcurl.so.4", "libcurl.so"};
    void *handle = NULL;
    const char *last = "";
    for (size_t i = 0; i < sizeof names / sizeof names[0] && handle == NULL; i++) {
        handle = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (handle == NULL) last = dlerror();
    }
    if (handle == NULL) {
        snprintf(load_error, sizeof load_error,
                 "cannot load libcurl, which idx uses to download URLs (%s); install Debian's libcurl4 "
                 "(apt-get install libcurl4)", last ? last : "not found");
        return;
    }
    struct { const char *name; void **slot; } table[] = {
        {"curl_global_init", (void **)&p_global_init},
        {"curl_easy_init", (void **)&p_init},
        {"curl_easy_setopt", (void **)&p_setopt},
        {"curl_easy_perform", (void **)&p_perform},
        {"curl_easy_getinfo", (void **)&p_getinfo},
        {"curl_easy_cleanup", (void **)&p_cleanup},
        {"curl_easy_strerror", (void **)&p_strerror},
        {"curl_easy_header", (void **)&p_header},         /* 7.83 */
        {"curl_easy_nextheader", (void **)&p_nextheader}, /* 7.83 */
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        *table[i].slot = dlsym(handle, table[i].name);
        if (*table[i].slot == NULL) {
            snprintf(load_error, sizeof load_error,
                     "libcurl has no symbol %s (idx needs libcurl 7.83 or newer; install Debian's libcurl4)", table[i].name);
            dlclose(handle);
            return;
        }
    }
    /* Not thread-safe in libcurl before 7.84, hence once, here. */
    CURLcode rc = p_global_init(CURL_GLOBAL_ALL);
    if (rc != CURLE_OK) {
        snprintf(load_error, sizeof load_error, "curl_global_init failed: %s", p_strerror(rc));
        dlclose(handle);
        return;
    }
    library = handle;
    load_status = 0;
}

int idx_curl_load(char *error, size_t length) {
    pthread_once(&load_once, load);
    if (load_status != 0 && length > 0) snprintf(error, length, "%s", load_error);
    return load_status;
}

/* State of one transfer, shared by the header and write callbacks. */
struct transfer {
    CURL *curl;
    idx_curl_response_fn on_response;
    idx_curl_body_fn on_body;
    void *context;
    char *fields;        /* the final response's fields, as name NUL value NUL pairs */
    size_t fields_length, fields_capacity;
    int delivered;       /* on_response was called */
    int skip_body;
    int aborted;         /* a user callback asked to stop */
    int64_t position;    /* where the next body byte goes */
    const char *failure; /* our own reason to stop, if any */
};

static const size_t max_fields = 1 << 20;

static int append_field(struct transfer *t, const char *text) {
    size_t n = strlen(text) + 1;
    if (t->fields_length + n > max_fields) { t->failure = "the response header is larger than 1 MiB"; return -1; }
    if (t->fields_length + n > t->fields_capacity) {
        size_t capacity = t->fields_capacity ? t->fields_capacity : 4096;
        while (capacity < t->fields_length + n) capacity *= 2;
        char *grown = realloc(t->fields, capacity);
        if (grown == NULL) { t->failure = "out of memory"; return -1; }
        t->fields = grown;
        t->fields_capacity = capacity;
    }
    memcpy(t->fields + t->fields_length, text, n);
    t->fields_length += n;
    return 0;
}

/* curl passes every header line of every response (1xx, each redirect, the
   final one, then any chunked trailers); a blank line ends a response's header.
   At the end of the final one, its fields are read back with curl_easy_nextheader
   (request -1: the latest) and handed on, once. */
static size_t on_header(char *line, size_t size, size_t count, void *user) {
    struct transfer *t = user;
    size_t n = size * count;
    if (t->delivered) return n; /* trailers */
    int blank = (n == 2 && line[0] == '\r' && line[1] == '\n') || (n == 1 && line[0] == '\n');
    if (!blank) return n;
    long status = 0;
    p_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
    /* 1xx: the real answer follows. 3xx with Location (not 304/305): curl
       follows it and drops its body. */
    struct curl_header *location = NULL;
    int followed = status >= 300 && status < 400 && status != 304 && status != 305
        && p_header(t->curl, "Location", 0, CURLH_HEADER, -1, &location) == CURLHE_OK;
    if ((status >= 100 && status < 200) || followed) return n;
    t->delivered = 1;
    t->fields_length = 0;
    for (struct curl_header *h = p_nextheader(t->curl, CURLH_HEADER, -1, NULL); h != NULL;
         h = p_nextheader(t->curl, CURLH_HEADER, -1, h)) {
        if (append_field(t, h->name) != 0 || append_field(t, h->value) != 0) return 0;
    }
    int64_t where = t->on_response(t->context, status, t->fields ? t->fields : "", t->fields_length);
    if (where == IDX_CURL_SKIP_BODY) {
        t->skip_body = 1;
    } else if (where < 0) {
        t->aborted = 1;
        return 0; /* curl stops with CURLE_WRITE_ERROR */
    } else {
        t->position = where;
    }
    return n;
}

static size_t on_data(char *bytes, size_t size, size_t count, void *user) {
    struct transfer *t = user;
    size_t n = size * count;
    if (!t->delivered) { t->failure = "a body arrived before the response header"; return 0; }
    if (t->skip_body || n == 0) return n;
    if (t->on_body(t->context, t->position, bytes, n) != 0) { t->aborted = 1; return 0; }
    t->position += (int64_t)n;
    return n;
}

int idx_curl_get(const char *url, const char *range, double connect_timeout, double idle_timeout,
                 idx_curl_response_fn on_response, idx_curl_body_fn on_body, void *context,
                 char *error, size_t length) {
    if (length > 0) error[0] = 0;
    if (idx_curl_load(error, length) != 0) return IDX_CURL_NOT_LOADED;
    struct transfer t = {.on_response = on_response, .on_body = on_body, .context = context};
    t.curl = p_init();
    if (t.curl == NULL) {
        snprintf(error, length, "curl_easy_init failed");
        return IDX_CURL_FAILED;
    }
    char curl_error[CURL_ERROR_SIZE] = "";
    CURL *c = t.curl;
    p_setopt(c, CURLOPT_URL, url);
    p_setopt(c, CURLOPT_ERRORBUFFER, curl_error);
    p_setopt(c, CURLOPT_NOSIGNAL, 1L); /* no SIGALRM for DNS timeouts: idx is multi-threaded */
    p_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    p_setopt(c, CURLOPT_MAXREDIRS, 20L);
    /* http and https only, also for redirects (the _STR options need curl 7.85). */
    if (p_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK) p_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    if (p_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") != CURLE_OK) p_setopt(c, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    /* Sizes are checked against Content-Length: the bytes must arrive as stored. */
    p_setopt(c, CURLOPT_ACCEPT_ENCODING, "identity");
    p_setopt(c, CURLOPT_USERAGENT, "idx");
    p_setopt(c, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L); /* a proxy's CONNECT answer is not the response */
    if (range != NULL) p_setopt(c, CURLOPT_RANGE, range);
    if (connect_timeout > 0) p_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(connect_timeout * 1000));
    if (idle_timeout > 0) {
        /* Less than 1 byte/s for idle_timeout seconds: URLSession's timeoutIntervalForRequest. */
        long seconds = (long)idle_timeout;
        if ((double)seconds < idle_timeout || seconds < 1) seconds += 1;
        p_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
        p_setopt(c, CURLOPT_LOW_SPEED_TIME, seconds);
    }
    p_setopt(c, CURLOPT_HEADERFUNCTION, (curl_write_callback)on_header);
    p_setopt(c, CURLOPT_HEADERDATA, (void *)&t);
    p_setopt(c, CURLOPT_WRITEFUNCTION, (curl_write_callback)on_data);
    p_setopt(c, CURLOPT_WRITEDATA, (void *)&t);

    /* With NOSIGNAL curl leaves SIGPIPE to us: a write to a socket the peer
       closed must not kill idx. Block it on this thread, then drop any that
       came (the signal goes to the writing thread). */
    sigset_t pipe_set, old_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
    CURLcode rc = p_perform(c);
    if (!sigismember(&old_set, SIGPIPE)) {
        sigset_t pending;
        struct timespec zero = {0, 0};
        if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) sigtimedwait(&pipe_set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old_set, NULL);

    int result = IDX_CURL_OK;
    if (t.aborted) {
        result = IDX_CURL_ABORTED;
    } else if (t.failure != NULL) {
        snprintf(error, length, "%s", t.failure);
        result = IDX_CURL_FAILED;
    } else if (rc != CURLE_OK) {
        snprintf(error, length, "%s", curl_error[0] ? curl_error : p_strerror(rc));
        result = IDX_CURL_FAILED;
    } else if (!t.delivered) {
        snprintf(error, length, "no HTTP response");
        result = IDX_CURL_FAILED;
    }
    p_cleanup(c);
    free(t.fields);
    return result;
}
