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

/* The part of curl.h we use. A CURL handle is opaque; option and info numbers
   are type base + index (CURLOPTTYPE_LONG 0, OBJECTPOINT 10000, FUNCTIONPOINT
   20000; CURLINFO_LONG 0x200000) and part of libcurl's stable ABI. */
typedef void CURL;
typedef size_t (*curl_data_fn)(char *, size_t, size_t, void *);

enum {
    OPT_WRITEDATA = 10001,
    OPT_URL = 10002,
    OPT_RANGE = 10007,
    OPT_ERRORBUFFER = 10010,
    OPT_WRITEFUNCTION = 20011,
    OPT_USERAGENT = 10018,
    OPT_LOW_SPEED_LIMIT = 19,
    OPT_LOW_SPEED_TIME = 20,
    OPT_HEADERDATA = 10029,
    OPT_FOLLOWLOCATION = 52,
    OPT_MAXREDIRS = 68,
    OPT_HEADERFUNCTION = 20079,
    OPT_NOSIGNAL = 99,
    OPT_ACCEPT_ENCODING = 10102,
    OPT_CONNECTTIMEOUT_MS = 156,
    OPT_PROTOCOLS = 181,           /* bitmask, deprecated by PROTOCOLS_STR (7.85) */
    OPT_REDIR_PROTOCOLS = 182,
    OPT_SUPPRESS_CONNECT_HEADERS = 265,
    OPT_PROTOCOLS_STR = 10318,
    OPT_REDIR_PROTOCOLS_STR = 10319,
    INFO_RESPONSE_CODE = 0x200002,
    PROTO_HTTP = 1,
    PROTO_HTTPS = 2,
    GLOBAL_ALL = 3,
    ERROR_SIZE = 256, /* CURL_ERROR_SIZE */
};

static void *library;
static int load_status = -1;
static char load_error[512];
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static int (*p_global_init)(long);
static CURL *(*p_init)(void);
static int (*p_setopt)(CURL *, int, ...);
static int (*p_perform)(CURL *);
static int (*p_getinfo)(CURL *, int, ...);
static void (*p_cleanup)(CURL *);
static const char *(*p_strerror)(int);

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
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        *table[i].slot = dlsym(handle, table[i].name);
        if (*table[i].slot == NULL) {
            snprintf(load_error, sizeof load_error, "libcurl has no symbol %s", table[i].name);
            dlclose(handle);
            return;
        }
    }
    /* Not thread-safe in libcurl before 7.84, hence once, here. */
    int rc = p_global_init(GLOBAL_ALL);
    if (rc != 0) {
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
    char *head;          /* the header block being collected */
    size_t head_length, head_capacity;
    int head_has_location;
    int delivered;       /* on_response was called */
    int skip_body;
    int aborted;         /* a user callback asked to stop */
    int64_t position;    /* where the next body byte goes */
    const char *failure; /* our own reason to stop, if any */
};

static const size_t max_head = 1 << 20;

static int append_head(struct transfer *t, const char *line, size_t n) {
    if (t->head_length + n > max_head) { t->failure = "the response header is larger than 1 MiB"; return -1; }
    if (t->head_length + n > t->head_capacity) {
        size_t capacity = t->head_capacity ? t->head_capacity : 4096;
        while (capacity < t->head_length + n) capacity *= 2;
        char *grown = realloc(t->head, capacity);
        if (grown == NULL) { t->failure = "out of memory"; return -1; }
        t->head = grown;
        t->head_capacity = capacity;
    }
    memcpy(t->head + t->head_length, line, n);
    t->head_length += n;
    return 0;
}

/* curl passes every header line of every response (1xx, each redirect, the
   final one, then any chunked trailers) one line at a time; a blank line ends
   a block. Only the final block is handed on, once. */
static size_t on_header(char *line, size_t size, size_t count, void *user) {
    struct transfer *t = user;
    size_t n = size * count;
    if (t->delivered) return n; /* trailers */
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) { /* a status line starts a block */
        t->head_length = 0;
        t->head_has_location = 0;
    }
    if (n > 9 && strncasecmp(line, "location:", 9) == 0) t->head_has_location = 1;
    int blank = (n == 2 && line[0] == '\r' && line[1] == '\n') || (n == 1 && line[0] == '\n');
    if (!blank) return append_head(t, line, n) == 0 ? n : 0;
    long status = 0;
    p_getinfo(t->curl, INFO_RESPONSE_CODE, &status);
    /* 1xx: the real answer follows. 3xx with Location (not 304/305): curl
       follows it and drops its body. */
    int followed = status >= 300 && status < 400 && status != 304 && status != 305 && t->head_has_location;
    if ((status >= 100 && status < 200) || followed) {
        t->head_length = 0;
        t->head_has_location = 0;
        return n;
    }
    t->delivered = 1;
    int64_t where = t->on_response(t->context, status, t->head ? t->head : "", t->head_length);
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
    char curl_error[ERROR_SIZE] = "";
    CURL *c = t.curl;
    p_setopt(c, OPT_URL, url);
    p_setopt(c, OPT_ERRORBUFFER, curl_error);
    p_setopt(c, OPT_NOSIGNAL, 1L); /* no SIGALRM for DNS timeouts: idx is multi-threaded */
    p_setopt(c, OPT_FOLLOWLOCATION, 1L);
    p_setopt(c, OPT_MAXREDIRS, 20L);
    /* http and https only, also for redirects (the _STR options need curl 7.85). */
    if (p_setopt(c, OPT_PROTOCOLS_STR, "http,https") != 0) p_setopt(c, OPT_PROTOCOLS, (long)(PROTO_HTTP | PROTO_HTTPS));
    if (p_setopt(c, OPT_REDIR_PROTOCOLS_STR, "http,https") != 0) p_setopt(c, OPT_REDIR_PROTOCOLS, (long)(PROTO_HTTP | PROTO_HTTPS));
    /* Sizes are checked against Content-Length: the bytes must arrive as stored. */
    p_setopt(c, OPT_ACCEPT_ENCODING, "identity");
    p_setopt(c, OPT_USERAGENT, "idx");
    p_setopt(c, OPT_SUPPRESS_CONNECT_HEADERS, 1L); /* a proxy's CONNECT answer is not the response */
    if (range != NULL) p_setopt(c, OPT_RANGE, range);
    if (connect_timeout > 0) p_setopt(c, OPT_CONNECTTIMEOUT_MS, (long)(connect_timeout * 1000));
    if (idle_timeout > 0) {
        /* Less than 1 byte/s for idle_timeout seconds: URLSession's timeoutIntervalForRequest. */
        long seconds = (long)idle_timeout;
        if ((double)seconds < idle_timeout || seconds < 1) seconds += 1;
        p_setopt(c, OPT_LOW_SPEED_LIMIT, 1L);
        p_setopt(c, OPT_LOW_SPEED_TIME, seconds);
    }
    p_setopt(c, OPT_HEADERFUNCTION, (curl_data_fn)on_header);
    p_setopt(c, OPT_HEADERDATA, (void *)&t);
    p_setopt(c, OPT_WRITEFUNCTION, (curl_data_fn)on_data);
    p_setopt(c, OPT_WRITEDATA, (void *)&t);

    /* With NOSIGNAL curl leaves SIGPIPE to us: a write to a socket the peer
       closed must not kill idx. Block it on this thread, then drop any that
       came (the signal goes to the writing thread). */
    sigset_t pipe_set, old_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
    int rc = p_perform(c);
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
    } else if (rc != 0) {
        snprintf(error, length, "%s", curl_error[0] ? curl_error : p_strerror(rc));
        result = IDX_CURL_FAILED;
    } else if (!t.delivered) {
        snprintf(error, length, "no HTTP response");
        result = IDX_CURL_FAILED;
    }
    p_cleanup(c);
    free(t.head);
    return result;
}
