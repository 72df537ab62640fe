/* Basic vocabulary of the dspyc public API: export macro, status codes, error details,
 * the allocator hooks and the version. Every other public header includes this one. */
#ifndef DSPYC_COMMON_H
#define DSPYC_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dspyc/version.h>

#if defined(DSPY_BUILDING)
#define DSPY_EXTERN __attribute__((visibility("default")))
#else
#define DSPY_EXTERN
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** Result of every public call that can fail: DSPY_OK (0) or a negative code. */
typedef enum dspy_status {
    DSPY_OK = 0,
    DSPY_ENOMEM = -1,       /* an allocation failed */
    DSPY_EINVAL = -2,       /* a bad argument or an input that breaks a rule */
    DSPY_EPARSE = -3,       /* text could not be parsed (JSON, signature, program file) */
    DSPY_EIO = -4,          /* reading or writing a file failed */
    DSPY_ETOOBIG = -5,      /* an input or output exceeded its size limit */
    DSPY_EADAPTER = -6,     /* the LM's output did not fit the signature */
    DSPY_ENOTFOUND = -7,    /* a named thing (field, predictor, file) does not exist */
    DSPY_EUNSUPPORTED = -8, /* valid but not supported by this build */
    DSPY_EBUSY = -9,        /* a bounded queue is full: back off and retry */
    DSPY_ECANCELED = -10,   /* cancelled by the caller */
    DSPY_EUTF8 = -11,       /* invalid UTF-8 */
    DSPY_ECORRUPT = -12,    /* a stored file is damaged (cut short, not what its header says) */
    DSPY_ERESOURCE = -13,   /* the process ran out of a system resource (open files: EMFILE) */
    /* Errors from the LM endpoint, by class. */
    DSPY_ELM_AUTH = -20,        /* 401/403: missing or wrong API key */
    DSPY_ELM_RATE_LIMIT = -21,  /* 429 */
    DSPY_ELM_CONTEXT = -22,     /* the prompt does not fit the model's context window */
    DSPY_ELM_BAD_REQUEST = -23, /* other 4xx: the endpoint rejected the request */
    DSPY_ELM_SERVER = -24,      /* 5xx */
    DSPY_ELM_NETWORK = -25,     /* connect failed, connection dropped */
    DSPY_ELM_TIMEOUT = -26,     /* no complete answer within the timeout */
    DSPY_ELM_BAD_RESPONSE = -27 /* the endpoint answered 2xx with a body we cannot read */
} dspy_status;

/** Details of a failure, filled by calls that take an optional `struct dspy_error *`.
 * Fields that do not apply are empty strings or -1. Caller-allocated; no release needed. */
struct dspy_error {
    dspy_status code;
    char message[512]; /* one line, says what went wrong and where */
    char file[256];    /* input file, when the error is in one */
    long line;         /* 1-based line in `file` (or in the input stream), -1 if none */
    long column;       /* 1-based column, -1 if none */
    long offset;       /* 0-based byte offset in the input text, -1 if none */
    char field[128];   /* field, key or predictor name involved, if any */
    int http_status;   /* HTTP status of an LM error, 0 if none */
};

/** Text for a status code, e.g. "parse error". Never NULL; static storage. */
DSPY_EXTERN const char *dspy_strerror(dspy_status code);
/** Stable machine name for a status code, e.g. "parse", "rate_limit". Static storage. */
DSPY_EXTERN const char *dspy_status_name(dspy_status code);
/** Reset `err` to "no error" (code 0, empty strings, -1 positions). NULL is a no-op. */
DSPY_EXTERN void dspy_error_clear(struct dspy_error *err);

/** Allocator hooks. All library allocation goes through them. Set them before any other
 * call, from one thread; NULL members keep the default (libc). */
struct dspy_allocator {
    void *(*malloc)(size_t size);
    void *(*realloc)(void *ptr, size_t size);
    void (*free)(void *ptr);
};
DSPY_EXTERN void dspy_set_allocator(const struct dspy_allocator *alloc);
DSPY_EXTERN void *dspy_malloc(size_t size);
DSPY_EXTERN void *dspy_calloc(size_t n, size_t size);
DSPY_EXTERN void *dspy_realloc(void *ptr, size_t size);
DSPY_EXTERN void dspy_free(void *ptr);
/** Copy of `s` (or of its first `n` bytes, NUL-terminated); NULL on failure. Free with
 * dspy_free(). */
DSPY_EXTERN char *dspy_strdup(const char *s);
DSPY_EXTERN char *dspy_strndup(const char *s, size_t n);

/** Monotonic clock in nanoseconds (CLOCK_MONOTONIC), for timing. Thread-safe. */
DSPY_EXTERN uint64_t dspy_clock_ns(void);

/** Copy `url` into `out` (`cap` bytes, always NUL-terminated) with its credentials masked:
 * "http://user:pw@host/v1" -> "http://user:***@host/v1"; a lone user part (often a
 * token, "https://TOKEN@host") becomes "***" as a whole. Every URL the library or the command puts into a message, record
 * or report goes through this. Returns the length written (truncated to fit). */
DSPY_EXTERN size_t dspy_url_redact(const char *url, char *out, size_t cap);
/** Whether `url` carries credentials (a userinfo part before '@'). */
DSPY_EXTERN bool dspy_url_has_credentials(const char *url);

/** Version of the linked library, "MAJOR.MINOR.PATCH". */
DSPY_EXTERN const char *dspy_version(void);

#ifdef __cplusplus
}
#endif
#endif
