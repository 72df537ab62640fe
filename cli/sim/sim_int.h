/* Private declarations shared by the simulator's files (apps layer): text utilities and
 * token counting (sim_text.c), DSPy prompt parsing (sim_prompt.c), answer generation
 * (sim_answer.c), the arith task pack (sim_arith.c) and embeddings (sim_embed.c). */
#ifndef DSPYC_CLI_SIM_INT_H
#define DSPYC_CLI_SIM_INT_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dspyc/embed.h>

#include "base/buf.h"
#include "base/pyfmt.h"
#include "net/server.h"
#include "sim.h"

/* ---- Text utilities (sim_text.c) ---- */

struct sim_view {
    const char *p;
    size_t n;
};

#define SIM_VIEW_INIT(s) { (s), sizeof(s) - 1 }
#define SIM_VIEW(s) ((struct sim_view)SIM_VIEW_INIT(s))

uint64_t sim_hash(uint64_t seed, const void *p, size_t n);
uint64_t sim_mix(uint64_t a, uint64_t b);
/* A uniform draw in [0, 1) from a hash. */
double sim_unit(uint64_t h);
/* Tokens: pieces of at most 4 bytes of one class (word characters, spaces, or a single
 * punctuation character), a single leading space joining the word after it; a UTF-8
 * character is never split. */
size_t sim_token_len(const char *s, size_t n);
size_t sim_tokens(const char *s, size_t n);
/* Bytes taken by the first `max` tokens. */
size_t sim_tokens_prefix(const char *s, size_t n, size_t max);
/* Offset of the first invalid UTF-8 byte, or n if all valid. */
size_t sim_utf8_check(const char *s, size_t n);
bool sim_view_eq(struct sim_view v, const char *s);
struct sim_view sim_view_strip(struct sim_view v);
/* Case-insensitive search; NULL if absent. */
const char *sim_find(struct sim_view hay, const char *needle);
const char *sim_find_ci(struct sim_view hay, const char *needle);
/* Up to max distinct content words (length >= 3, not stop words) of v, in order. */
size_t sim_keywords(struct sim_view v, struct sim_view *out, size_t have, size_t max);
dspy_status sim_base64(struct dspy_buf *b, const void *data, size_t len);

/* ---- Prompts (sim_prompt.c) ---- */

enum sim_role { SIM_ROLE_SYSTEM, SIM_ROLE_USER, SIM_ROLE_ASSISTANT, SIM_ROLE_OTHER };

struct sim_msg {
    enum sim_role role;
    struct sim_view text;
};

enum sim_adapter {
    SIM_ADAPTER_NONE, /* not a DSPy prompt: plain reply */
    SIM_ADAPTER_CHAT, /* [[ ## field ## ]] blocks */
    SIM_ADAPTER_JSON  /* a JSON object with the output fields */
};

#define SIM_MAX_FIELDS 48
#define SIM_MAX_REPLY_TOKENS 131072 /* longest plain reply (--reply-tokens, ignore_eos) */
#define SIM_MAX_BLOCKS 64

struct sim_field {
    struct sim_view name;
    struct sim_view type;  /* as printed, e.g. "Literal['pos', 'neg']" */
    struct sim_view note;  /* "must ..." from the structure placeholder; empty if none */
    struct sim_view value; /* inputs: the final user message's value; p NULL if absent */
    json_t *schema;        /* outputs: the note's JSON schema, or NULL; owned */
};

struct sim_block {
    struct sim_view name;
    struct sim_view value;
};

struct sim_prompt {
    enum sim_adapter adapter;
    struct sim_field inputs[SIM_MAX_FIELDS];
    struct sim_field outputs[SIM_MAX_FIELDS];
    size_t n_inputs, n_outputs;
    struct sim_view system;       /* whole system message (empty if none) */
    struct sim_view instructions; /* the objective; for plain prompts the system message */
    struct sim_view final_user;   /* the last user message */
    const struct sim_msg *msgs;   /* borrowed */
    size_t n_msgs;
    size_t final_idx; /* msgs[final_idx] is the final user message; demos lie before it */
    json_t *structure; /* JSON adapter: the output structure object; owned */
};

/* Understand a message list. Never fails: an unknown shape is SIM_ADAPTER_NONE. The prompt
 * borrows msgs' text; release it with sim_prompt_release. */
void sim_prompt_parse(struct sim_prompt *p, const struct sim_msg *msgs, size_t n);
void sim_prompt_release(struct sim_prompt *p);
/* "[[ ## name ## ]]" blocks of a text, as DSPy's ChatAdapter.parse reads them (first
 * occurrence of a name wins). Returns the number found (at most max). */
size_t sim_blocks(struct sim_view text, struct sim_block *out, size_t max);
const struct sim_field *sim_prompt_output(const struct sim_prompt *p, const char *name);
/* Literal['a', 'b'] and "one of: a; b" choices, as JSON values (strings, numbers, bools). */
json_t *sim_type_choices(struct sim_view type, struct sim_view note);

/* ---- Answers (sim_answer.c) ---- */

struct sim_answer_opts {
    uint64_t seed;
    uint64_t req_hash;    /* hash of the request content (see docs/simulator.md) */
    unsigned choice;      /* index among n choices */
    double temperature;   /* absent = 0 */
    unsigned reply_tokens; /* plain replies: exact length in tokens; 0 = natural */
    json_t *json_schema;  /* response_format json_schema's schema, or NULL (borrowed) */
    bool json_object;     /* response_format json_object */
};

/* The reply content for one choice, appended to out. */
dspy_status sim_answer(const struct sim_prompt *p, const struct sim_answer_opts *o,
                       struct dspy_buf *out);
/* A value valid for the JSON schema s (root holds $defs). New reference. */
json_t *sim_schema_value(json_t *s, json_t *root, uint64_t h, const struct sim_view *kw,
                         size_t nkw, int depth);

/* ---- Arith task pack (sim_arith.c) ---- */

struct sim_arith {
    int kind;       /* template number */
    long a, b, c;
    int op1, op2;   /* verb indices for the templates that take verbs */
    char name[16];
    char item[16];
    bool she;
    long answer;    /* the true answer */
    size_t start, len; /* where the question lies in the searched text */
};

/* Find the first arith question in s. */
bool sim_arith_find(const char *s, size_t n, struct sim_arith *q);
/* Question number `index` of the set drawn with `seed`. */
dspy_status sim_arith_generate(uint64_t seed, uint64_t index, struct dspy_buf *q, long *answer);

struct sim_accuracy {
    double p;           /* probability of a correct answer */
    int demos_right;    /* demos that solve an arith question correctly */
    int demos_wrong;    /* demos with an arith question and a wrong or missing answer */
    bool reasoning;     /* the signature has a reasoning output field */
    double instruction; /* instruction keyword bonus */
};
void sim_arith_accuracy(const struct sim_prompt *p, struct sim_accuracy *acc);
/* The answer the simulator gives: true or plausibly wrong, by the accuracy draw. */
long sim_arith_answer(const struct sim_prompt *p, const struct sim_arith *q,
                      const struct sim_answer_opts *o, bool *correct);
/* Short step-by-step text that ends at `claimed`. */
dspy_status sim_arith_reasoning(const struct sim_arith *q, long claimed, struct dspy_buf *out);
/* `dspyc sim gen-task arith --n N --seed S`. */
int sim_gen_task(int argc, char **argv);

/* ---- Embeddings (sim_embed.c) ---- */

/* Hashed word and character-trigram features, L2-normalized, into out[0..dim). */
void sim_embed(const char *s, size_t n, float *out, unsigned dim);
/* ---- Real embeddings (sim_minilm.c) ---- */
/* Load the model when --embedder minilm; 0, or -1 with errbuf filled. */
int sim_minilm_open(struct sim *s, char *errbuf, size_t errlen);
void sim_minilm_close(struct sim *s);
dspy_status sim_minilm_embed(struct sim *s, const char *text, size_t n, float *out);
/* The model's token count of a text ([CLS] and [SEP] included), for usage. */
size_t sim_minilm_tokens(struct sim *s, const char *text, size_t n);
/* The vector as a JSON array of shortest float32 texts. */
dspy_status sim_minilm_add_floats(struct dspy_buf *b, const float *v, unsigned dim);

/* ---- The running simulator (sim.c, sim_serve.c, sim_chat.c) ---- */

enum sim_fault {
    SIM_F_NONE = -1,
    SIM_F_429,
    SIM_F_500,
    SIM_F_503,
    SIM_F_TIMEOUT,
    SIM_F_DROP,
    SIM_F_MALFORMED,
    SIM_F_TRUNCATE,
    SIM_F_COUNT
};

struct sim {
    struct sim_options o; /* strings point at the copies below */
    char *bind, *model, *api_key, *record_path;
    struct dspy__srv *srv;
    FILE *record;
    pthread_mutex_t record_lock; /* one line at a time */
    pthread_mutex_t qlock;       /* guards slots and queue */
    uint64_t *slots;             /* capacity model: min-heap of times each slot frees up */
    uint64_t *queue;             /* min-heap of start times of requests still waiting */
    size_t qlen, qcap;
    atomic_uint_fast64_t attempts; /* draws of the fault and jitter sequences */
    atomic_uint_fast64_t ids;
    atomic_uint_fast64_t by_status[600];
    atomic_uint_fast64_t faults[SIM_F_COUNT];
    atomic_uint_fast64_t streams, completion_tokens;
    uint64_t start_ns;
    dspy_embedder *minilm; /* --embedder minilm: real embeddings (sim_minilm.c), else NULL */
};

/* Per-attempt draws from the seeded sequence: which fault (or none) and a jitter factor
 * u in [-1, 1]. Not a function of the request, so a retry can succeed. */
enum sim_fault sim_draw(struct sim *s, double *jitter_u);
/* Answer a fault that needs no content (429, 500, 503, timeout, drop); false otherwise. */
bool sim_fault_answer(struct sim *s, struct dspy__srv_req *req, enum sim_fault f);
/* 401 unless the API key matches (when one is configured); false when answered. */
bool sim_auth(struct sim *s, struct dspy__srv_req *req);
/* The body as a JSON object, or NULL after answering 400. */
json_t *sim_body_json(struct sim *s, struct dspy__srv_req *req);
/* Capacity model: when a request needing service_ns starts; false if the queue is full. */
bool sim_admit(struct sim *s, uint64_t now, uint64_t service_ns, uint64_t *start);
/* Refuse a request for a full queue. */
void sim_queue_full(struct sim *s, struct dspy__srv_req *req);
/* Scale a duration by the jitter draw: ms * (1 + jitter * u), in ns, never negative. */
uint64_t sim_ns(const struct sim *s, double ms, double u);
void sim_count(struct sim *s, int status);
/* Answer with a body at due, applying malformed/truncate faults. */
void sim_send_json(struct sim *s, struct dspy__srv_req *req, struct dspy_buf *body,
                   uint64_t due, enum sim_fault f);
dspy_status sim_routes(struct sim *s);
void sim_record(struct dspy__srv_req *req, void *ud);
void sim_chat(struct dspy__srv_req *req, void *ud);

#endif
