/* Load generator (net layer): an HTTP/1.1 client built for load tests, with one epoll loop
 * per generator thread, keep-alive connection pools, pre-built request bytes, an incremental
 * response parser (Content-Length, chunked, SSE) and open- or closed-loop arrival schedules
 * in which every request carries its intended send time. */
#ifndef DSPYC_LOADGEN_H
#define DSPYC_LOADGEN_H

#include <dspyc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Arrival schedules ---------------------------------------------------------------- */

/** How inter-arrival times are drawn at the current rate r (all have mean 1/r). */
enum dspy_arrival {
    DSPY_ARRIVAL_CONSTANT = 0, /* evenly spaced, 1/r */
    DSPY_ARRIVAL_POISSON,      /* exponential gaps (vLLM's default, burstiness 1) */
    DSPY_ARRIVAL_GAMMA         /* gamma gaps with shape k = burstiness, scale 1/(k r) (vLLM) */
};

/** One piece of a piecewise-linear rate profile: the rate goes from `from_rps` to `to_rps`
 * over `duration_s` (k6's ramping-arrival-rate stages). */
struct dspy_rate_stage {
    double duration_s;
    double from_rps;
    double to_rps;
};

/** A reproducible open-loop schedule: the arrivals of a non-homogeneous renewal process in
 * operational time, i.e. gaps X (mean 1) are drawn in units of the integrated rate and
 * mapped back to wall time through the profile. Caller-allocated; one thread. */
struct dspy_schedule {
    const struct dspy_rate_stage *stages; /* borrowed for the schedule's life */
    size_t nstages;
    enum dspy_arrival arrival;
    double burstiness; /* gamma shape k; 1 = Poisson */
    uint64_t seed;
    /* private state */
    uint64_t rng[4];
    size_t stage;
    double stage_t0; /* start of the current stage, seconds */
    double stage_l0; /* integrated rate at its start */
    double lambda;   /* integrated rate of the last arrival */
    double last_t;
};

/** Start a schedule at time 0. DSPY_EINVAL when a stage has a negative duration or rate, or
 * gamma has burstiness <= 0. */
DSPY_EXTERN dspy_status dspy_schedule_init(struct dspy_schedule *s,
                                           const struct dspy_rate_stage *stages, size_t n,
                                           enum dspy_arrival arrival, double burstiness,
                                           uint64_t seed);
/** Next arrival time in seconds from the start; false when the profile has ended. */
DSPY_EXTERN bool dspy_schedule_next(struct dspy_schedule *s, double *t_s);
/** Total duration of the profile in seconds, and the rate at time t. */
DSPY_EXTERN double dspy_schedule_duration(const struct dspy_schedule *s);
DSPY_EXTERN double dspy_schedule_rate_at(const struct dspy_schedule *s, double t_s);

/* ---- The generator -------------------------------------------------------------------- */

/** How response bodies are read. */
enum dspy_loadgen_parse {
    DSPY_LOADGEN_PLAIN = 0, /* any HTTP body; only status and sizes matter */
    DSPY_LOADGEN_OPENAI     /* OpenAI JSON or SSE: tokens, usage, chunk times (by Content-Type) */
};

/** How a request ended. */
enum dspy_loadgen_outcome {
    DSPY_LG_OK = 0,     /* a 2xx with a complete, well-formed body */
    DSPY_LG_HTTP,       /* a non-2xx status (see `status`) */
    DSPY_LG_TIMEOUT,    /* no complete answer within the request timeout */
    DSPY_LG_CONNECT,    /* the connection could not be opened */
    DSPY_LG_DISCONNECT, /* the server closed the connection before any response */
    DSPY_LG_TRUNCATED,  /* closed mid-response, or a stream that ended without [DONE] */
    DSPY_LG_MALFORMED,  /* unparsable HTTP, JSON body or SSE event, or an error event */
    DSPY_LG_NOUTCOMES
};
/** Stable name of an outcome: "ok", "http", "timeout", ... Static storage. */
DSPY_EXTERN const char *dspy_loadgen_outcome_name(enum dspy_loadgen_outcome o);

/** One finished request. Times are dspy_clock_ns() values; 0 when the event did not happen.
 * Views are borrowed until the callback returns. */
struct dspy_loadgen_result {
    uint64_t seq;              /* global arrival number, 0-based */
    uint32_t template_idx;     /* which request template was sent */
    uint32_t user;             /* closed loop: the virtual user; open loop: 0 */
    uint64_t intended_ns;      /* when the schedule wanted it sent */
    uint64_t sent_ns;          /* when its first byte was written */
    uint64_t first_byte_ns;    /* first response byte (TTFB) */
    uint64_t first_token_ns;   /* first SSE event with non-empty choices (vLLM TTFT) */
    uint64_t first_content_ns; /* first event with non-empty delta.content (GuideLLM TTFOT) */
    uint64_t last_token_ns;    /* last event with non-empty choices (vLLM E2EL end) */
    uint64_t done_ns;          /* response complete (or failure noticed) */
    enum dspy_loadgen_outcome outcome;
    int status;               /* HTTP status, 0 if none */
    bool stream;              /* the response was an event stream */
    bool new_connection;      /* a connection was opened for this request */
    long usage_tokens;        /* usage.completion_tokens, -1 when the response had none */
    long prompt_tokens;       /* usage.prompt_tokens, -1 when absent */
    uint32_t chunks;          /* token-bearing events */
    const uint64_t *chunk_ns; /* their receive times (first min(chunks, chunk_cap)) */
    uint32_t nchunk_ns;
    uint64_t bytes; /* response bytes, headers included */
};

typedef void (*dspy_loadgen_result_fn)(void *userdata, unsigned thread,
                                       const struct dspy_loadgen_result *r);

/** One request template: complete HTTP/1.1 request bytes (request line, headers including
 * Host and Content-Length, body). Borrowed for the run. */
struct dspy_loadgen_request {
    const char *bytes;
    size_t len;
};

struct dspy_loadgen_options {
    const char *host; /* numeric IPv4/IPv6 or a name; required */
    int port;
    unsigned threads; /* generator threads, each with its own loop (default 1) */
    const struct dspy_loadgen_request *requests; /* borrowed; at least one */
    size_t nrequests;
    bool random_requests; /* pick templates at random (seeded) instead of in turn */
    enum dspy_loadgen_parse parse;
    /* Open loop when `schedule_stages` is set, else closed loop with `users`. */
    const struct dspy_rate_stage *schedule_stages;
    size_t nstages;
    enum dspy_arrival arrival;
    double burstiness;
    uint64_t seed;
    unsigned users;         /* closed loop: virtual users */
    double think_s;         /* closed loop: pause after each answer */
    bool think_exponential; /* draw the pause from an exponential with mean think_s */
    double duration_s;      /* stop issuing after this long (0 = no limit; open loop ends
                              * with its profile anyway) */
    uint64_t max_requests;  /* stop issuing after this many (0 = no limit) */
    unsigned max_in_flight; /* concurrency cap over all threads (0 = none) */
    unsigned connections;   /* most connections over all threads (0 = 1024 open loop,
                              * `users` closed loop) */
    double timeout_s;       /* per request, from the actual send (default 30) */
    double drain_s;         /* after issuing stops, wait this long for answers (default 30) */
    size_t read_buffer;     /* per connection (default 16 KiB) */
    size_t max_body;        /* body bytes kept for usage scanning, the tail (default 16 KiB) */
    uint32_t chunk_cap;     /* chunk times kept per request (default 2048) */
    dspy_loadgen_result_fn on_result; /* called on the generator thread that owns it */
    void *userdata;
    uint64_t start_ns; /* dspy_clock_ns() at which time 0 of the schedule falls (0 =
                              * 2 ms after the call, once the threads are up) */
};
/* The defaults, each named once: DSPY_LOADGEN_OPTIONS_INIT sets them, and the generator
 * falls back to them where a field is left 0 (read_buffer). */
#define DSPY_LOADGEN_DEFAULT_TIMEOUT_S 30.0
#define DSPY_LOADGEN_DEFAULT_DRAIN_S 30.0
#define DSPY_LOADGEN_DEFAULT_READ_BUFFER 16384
#define DSPY_LOADGEN_DEFAULT_MAX_BODY 16384
#define DSPY_LOADGEN_DEFAULT_CHUNK_CAP 2048
#define DSPY_LOADGEN_OPTIONS_INIT                                                                 \
    {                                                                                             \
        .port = 80, .threads = 1, .parse = DSPY_LOADGEN_PLAIN, .arrival = DSPY_ARRIVAL_POISSON,   \
        .burstiness = 1.0, .timeout_s = DSPY_LOADGEN_DEFAULT_TIMEOUT_S,                           \
        .drain_s = DSPY_LOADGEN_DEFAULT_DRAIN_S, .read_buffer = DSPY_LOADGEN_DEFAULT_READ_BUFFER, \
        .max_body = DSPY_LOADGEN_DEFAULT_MAX_BODY, .chunk_cap = DSPY_LOADGEN_DEFAULT_CHUNK_CAP    \
    }

/** Totals of one run, summed over threads. */
struct dspy_loadgen_stats {
    uint64_t started_ns, issue_end_ns, ended_ns; /* run start, last send, last answer */
    uint64_t scheduled;       /* arrivals the schedule produced within the bounds */
    uint64_t sent, completed; /* completed = results delivered (any outcome) */
    uint64_t abandoned;       /* scheduled but never answered when the drain ran out */
    uint64_t connections_opened;
    uint64_t cpu_ns; /* CPU time of the generator threads */
    uint64_t loop_iterations;
};

/** Run a load test to its end on `threads` new threads; blocks the caller. Results arrive
 * through on_result on the generator threads (each thread calls it only for its own
 * requests, so per-thread state needs no lock). `stop`, when not NULL, is polled: set it to
 * end issuing early (e.g. from a signal handler). DSPY_EINVAL for bad options, DSPY_ENOMEM,
 * DSPY_ELM_NETWORK when the host does not resolve. */
DSPY_EXTERN dspy_status dspy_loadgen_run(const struct dspy_loadgen_options *opts,
                                         volatile const int *stop, struct dspy_loadgen_stats *stats,
                                         struct dspy_error *err);

/** Build request bytes: "METHOD path HTTP/1.1", Host, the given header lines (each
 * "Name: value", may be NULL), Content-Length when a body is given, and the body.
 * Caller owns the result (dspy_free); NULL on allocation failure. */
DSPY_EXTERN char *dspy_loadgen_build_request(const char *method, const char *host, int port,
                                             const char *path, const char *const *headers,
                                             size_t nheaders, const char *body, size_t body_len,
                                             size_t *out_len);

#ifdef __cplusplus
}
#endif
#endif
