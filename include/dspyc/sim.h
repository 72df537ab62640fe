/* The OpenAI-compatible LM simulator (sim layer): an HTTP server whose answers are a pure
 * function of (request, seed), with a latency model, queueing and injected faults, for
 * offline work, tests and load tests. `dspyc sim` is a thin command over this header; other
 * programs start one in-process on a loopback port. It is a simulator, not a model. */
#ifndef DSPYC_SIM_H
#define DSPYC_SIM_H

#include <stdio.h>

#include <dspyc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A simulator. Threads: dspy_sim_new, _start, _stop and _free from one thread at a time
 * (not concurrently for the same handle); it serves from its own threads; dspy_sim_port,
 * dspy_sim_stats and dspy_sim_status_count from any thread between start and stop, and
 * after stop from the thread that stopped it. */
typedef struct dspy_sim dspy_sim;

/** Options; start from DSPY_SIM_OPTIONS_INIT. Strings are borrowed by dspy_sim_new, which
 * copies them. */
struct dspy_sim_options {
    const char *bind;  /* listen address, default "127.0.0.1" */
    int port;          /* 0 = an ephemeral port (the default; `dspyc sim` uses 8089) */
    unsigned threads;  /* server polling threads; 0 = one per CPU */
    uint64_t seed;     /* answers, accuracy draws, fault and jitter sequences */
    const char *model; /* the model /v1/models lists; requests may name any */
    /* Latency model (milliseconds). */
    double ttft_ms;        /* time to first token */
    double tpot_ms;        /* time per output token after the first */
    double latency_ms;     /* < 0: unset; else the fixed total, overriding ttft/tpot */
    double jitter;         /* each request's times scaled by 1 + jitter * u, u in [-1, 1] */
    unsigned capacity;     /* requests served at once; 0 = unlimited (no queue) */
    unsigned max_queue;    /* waiting requests beyond which new ones are refused; 0 = no cap */
    int queue_full_status; /* 503 or 429 */
    /* Faults: rates in [0, 1] per attempt, summing to at most 1. */
    double fail_429, fail_500, fail_503, fail_timeout, fail_drop, fail_malformed, fail_truncate;
    double retry_after_s;   /* Retry-After of a 429 or a full queue */
    double timeout_hold_ms; /* how long a "timeout" fault holds the request before closing */
    /* Other behaviour. */
    const char *record_path;   /* JSONL of every request received, or NULL */
    const char *model_quality; /* "NAME=Q,NAME=Q": the task packs' chance of a right answer
                                  for requests naming model NAME is multiplied by Q (0 to
                                  2; then clamped as usual); other models 1. NULL = none.
                                  At most DSPY_SIM_MAX_QUALITY models */
    size_t max_body;           /* request body limit in bytes (at least 1024) */
    unsigned embed_dim;        /* embedding dimensions, 1 to 65536 */
    const char *embedder;      /* "hash" (default, NULL) or "minilm": real all-MiniLM-L6-v2
                                vectors from the library's embedder (then 384 dimensions) */
    const char *embed_model;   /* model folder for minilm; NULL = the embedder's default */
    const char *api_key;       /* if set and not empty, /v1/ needs "Authorization: Bearer KEY" */
    const char *api_key_env;   /* else the key from this variable (it must be set) */
    const char *api_key_file;  /* else (or when the variable is unset) the file's first line.
                                 Keys are trimmed; control characters are refused */
    unsigned reply_tokens;     /* length of plain (non-DSPy) replies; 0 = natural */
    /* Limits against abusive clients (see docs/simulator.md). A connection must send a whole
     * request head within header_timeout_ms of connecting or of its previous answer (so an
     * idle keep-alive connection is closed then too), and its body within body_timeout_ms
     * of the head; else it is closed. */
    unsigned header_timeout_ms;      /* default 10000 */
    unsigned body_timeout_ms;        /* default 30000 */
    unsigned max_connections;        /* 0 = what the open-files limit allows; beyond it the
                                        oldest connection not being answered is closed */
    unsigned max_connections_per_ip; /* 0 = no cap */
    uint64_t max_body_bytes_total;   /* bodies being received, all together (by their
                                        Content-Length); more gets 503; 0 = 64 x max_body */
};

/** The most models model_quality may name. */
#define DSPY_SIM_MAX_QUALITY 16

/** The longest plain reply, in tokens (reply_tokens). */
#define DSPY_SIM_MAX_REPLY_TOKENS 131072

#define DSPY_SIM_OPTIONS_INIT                                                      \
    {                                                                              \
        .bind = "127.0.0.1", .port = 0, .model = "dspyc-sim", .latency_ms = -1,    \
        .queue_full_status = 503, .retry_after_s = 1, .timeout_hold_ms = 30000,    \
        .max_body = (size_t)4 << 20, .embed_dim = 384, .header_timeout_ms = 10000, \
        .body_timeout_ms = 30000                                                   \
    }

/** Counters since dspy_sim_start (the same figures GET /admin/stats reports). */
struct dspy_sim_stats {
    uint64_t requests;          /* fully received requests */
    uint64_t in_flight;         /* received and not yet finished */
    uint64_t in_flight_peak;    /* the most in flight at once since the start */
    uint64_t waiting;           /* of those, connections suspended right now */
    uint64_t too_big;           /* 413s for oversized bodies */
    uint64_t streams;           /* streamed completions started */
    uint64_t completion_tokens; /* tokens of every answer sent */
    uint64_t connections;       /* open right now */
    uint64_t body_bytes;        /* of request bodies being received (max_body_bytes_total) */
    uint64_t evicted;           /* connections closed to make room (max_connections) */
    uint64_t header_timeouts;   /* connections closed for a late request head */
    uint64_t body_timeouts;     /* connections closed for a late body */
    uint64_t bodies_refused;    /* 503s for max_body_bytes_total */
};

/** Check the options and create a simulator (not yet listening). DSPY_EINVAL with
 * err->field naming the option when one is out of range; DSPY_ENOMEM. On success *out is
 * the caller's: free it with dspy_sim_free. */
DSPY_EXTERN dspy_status dspy_sim_new(const struct dspy_sim_options *opts, dspy_sim **out,
                                     struct dspy_error *err);
/** Open the record file, listen and serve. DSPY_EIO (record file), or the server's error
 * (port in use, bad bind address). */
DSPY_EXTERN dspy_status dspy_sim_start(dspy_sim *sim, struct dspy_error *err);
/** The bound port; -1 before start. */
DSPY_EXTERN int dspy_sim_port(const dspy_sim *sim);
/** The listen address as given (borrowed until dspy_sim_free). */
DSPY_EXTERN const char *dspy_sim_bind(const dspy_sim *sim);
/** Stop serving: closes the listening socket and every open connection (waiting ones get
 * no answer). Counters stay readable. Idempotent. */
DSPY_EXTERN void dspy_sim_stop(dspy_sim *sim);
/** Stop if needed and free. NULL is a no-op. */
DSPY_EXTERN void dspy_sim_free(dspy_sim *sim);
DSPY_EXTERN void dspy_sim_stats(const dspy_sim *sim, struct dspy_sim_stats *out);
/** Answers sent with this HTTP status (every status, 404 and 413 included). */
DSPY_EXTERN uint64_t dspy_sim_status_count(const dspy_sim *sim, int status);

/** Write `n` generated questions of the task pack `task` (only "arith" today) drawn with
 * `seed`, as JSONL records {"question": ..., "answer": "24"}. DSPY_ENOTFOUND for an unknown
 * pack, DSPY_EIO when writing fails. */
DSPY_EXTERN dspy_status dspy_sim_write_task(FILE *out, const char *task, uint64_t n, uint64_t seed,
                                            struct dspy_error *err);

/** The "facts" task pack: its corpus (3,500 passages, JSON lines {"id", "title", "text"},
 * one fact each: "The river of Kelvaro is Ostraro.") to `corpus`, and `n` questions drawn
 * with `seed` to `questions`, as JSONL {"question", "answer", "supporting": [passage ids],
 * "hops": 1 or 2}. The simulator answers a facts question right only when the supporting
 * passages are in the prompt (docs/simulator.md). DSPY_EIO when writing fails. */
DSPY_EXTERN dspy_status dspy_sim_write_facts(FILE *questions, FILE *corpus, uint64_t n,
                                             uint64_t seed, struct dspy_error *err);

#ifdef __cplusplus
}
#endif
#endif
