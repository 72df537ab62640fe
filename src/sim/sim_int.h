/* Private declarations shared by the simulator's files (sim layer): text utilities and
 * token counting (sim_text.c), DSPy prompt parsing (sim_prompt.c), answer generation
 * (sim_answer.c), the arith task pack (sim_arith.c) and embeddings (sim_embed.c). */
#ifndef DSPY_SIM_SIM_INT_H
#define DSPY_SIM_SIM_INT_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dspyc/sim.h>

#include <dspyc/embed.h>

#include "base/buf.h"
#include "net/server.h"

/* ---- Text utilities (sim_text.c) ---- */

struct dspy__sim_view {
    const char *p;
    size_t n;
};

#define DSPY__SIM_VIEW_INIT(s) \
    {                          \
        (s), sizeof(s) - 1     \
    }
#define DSPY__SIM_VIEW(s) ((struct dspy__sim_view)DSPY__SIM_VIEW_INIT(s))

uint64_t dspy__sim_hash(uint64_t seed, const void *p, size_t n);
uint64_t dspy__sim_mix(uint64_t a, uint64_t b);
/* A uniform draw in [0, 1) from a hash. */
double dspy__sim_unit(uint64_t h);
/* Tokens: pieces of at most 4 bytes of one class (word characters, spaces, or a single
 * punctuation character), a single leading space joining the word after it; a UTF-8
 * character is never split. */
size_t dspy__sim_token_len(const char *s, size_t n);
size_t dspy__sim_tokens(const char *s, size_t n);
/* Bytes taken by the first `max` tokens. */
size_t dspy__sim_tokens_prefix(const char *s, size_t n, size_t max);
/* Offset of the first invalid UTF-8 byte, or n if all valid. */
size_t dspy__sim_utf8_check(const char *s, size_t n);
bool dspy__sim_view_eq(struct dspy__sim_view v, const char *s);
struct dspy__sim_view dspy__sim_view_strip(struct dspy__sim_view v);
/* Case-insensitive search; NULL if absent. */
const char *dspy__sim_find(struct dspy__sim_view hay, const char *needle);
const char *dspy__sim_find_ci(struct dspy__sim_view hay, const char *needle);
/* Up to max distinct content words (length >= 3, not stop words) of v, in order. */
size_t dspy__sim_keywords(struct dspy__sim_view v, struct dspy__sim_view *out, size_t have,
                          size_t max);

/* ---- Prompts (sim_prompt.c) ---- */

enum dspy__sim_role {
    DSPY__SIM_ROLE_SYSTEM,
    DSPY__SIM_ROLE_USER,
    DSPY__SIM_ROLE_ASSISTANT,
    DSPY__SIM_ROLE_OTHER
};

struct dspy__sim_msg {
    enum dspy__sim_role role;
    struct dspy__sim_view text;
};

enum dspy__sim_adapter {
    DSPY__SIM_ADAPTER_NONE, /* not a DSPy prompt: plain reply */
    DSPY__SIM_ADAPTER_CHAT, /* [[ ## field ## ]] blocks */
    DSPY__SIM_ADAPTER_JSON  /* a JSON object with the output fields */
};

#define DSPY__SIM_MAX_FIELDS 48
#define DSPY__SIM_MAX_BLOCKS 64

struct dspy__sim_field {
    struct dspy__sim_view name;
    struct dspy__sim_view type;  /* as printed, e.g. "Literal['pos', 'neg']" */
    struct dspy__sim_view note;  /* "must ..." from the structure placeholder; empty if none */
    struct dspy__sim_view value; /* inputs: the final user message's value; p NULL if absent */
    json_t *schema;              /* outputs: the note's JSON schema, or NULL; owned */
};

struct dspy__sim_block {
    struct dspy__sim_view name;
    struct dspy__sim_view value;
};

struct dspy__sim_prompt {
    enum dspy__sim_adapter adapter;
    struct dspy__sim_field inputs[DSPY__SIM_MAX_FIELDS];
    struct dspy__sim_field outputs[DSPY__SIM_MAX_FIELDS];
    size_t n_inputs, n_outputs;
    struct dspy__sim_view system;       /* whole system message (empty if none) */
    struct dspy__sim_view instructions; /* the objective; for plain prompts the system message */
    struct dspy__sim_view final_user;   /* the last user message */
    const struct dspy__sim_msg *msgs;   /* borrowed */
    size_t n_msgs;
    size_t final_idx;  /* msgs[final_idx] is the final user message; demos lie before it */
    json_t *structure; /* JSON adapter: the output structure object; owned */
};

/* Understand a message list. Never fails: an unknown shape is DSPY__SIM_ADAPTER_NONE. The prompt
 * borrows msgs' text; release it with dspy__sim_prompt_release. */
void dspy__sim_prompt_parse(struct dspy__sim_prompt *p, const struct dspy__sim_msg *msgs, size_t n);
void dspy__sim_prompt_release(struct dspy__sim_prompt *p);
/* "[[ ## name ## ]]" blocks of a text, as DSPy's ChatAdapter.parse reads them (first
 * occurrence of a name wins). Returns the number found (at most max). */
size_t dspy__sim_blocks(struct dspy__sim_view text, struct dspy__sim_block *out, size_t max);
const struct dspy__sim_field *dspy__sim_prompt_output(const struct dspy__sim_prompt *p,
                                                      const char *name);
/* Literal['a', 'b'] and "one of: a; b" choices, as JSON values (strings, numbers, bools). */
json_t *dspy__sim_type_choices(struct dspy__sim_view type, struct dspy__sim_view note);

/* ---- The prompt model (sim_propose.c) ---- */

/* A prompt of an optimizer's proposer (an output such as proposed_instruction or
 * observations): never read as an arith question. */
bool dspy__sim_propose_is_meta(const struct dspy__sim_prompt *p);
/* An instruction built from the prompt's inputs, drawn with hash h. */
json_t *dspy__sim_propose_instruction(const struct dspy__sim_prompt *p, uint64_t h);
/* GEPA's reflection prompt (a plain prompt opening "I provided an assistant with the
 * following instructions..."): a new instruction in a ``` block appended to out; false when
 * the prompt is not one. */
bool dspy__sim_propose_reflection(const struct dspy__sim_prompt *p, uint64_t h,
                                  struct dspy_buf *out);
/* A proposer prompt's other outputs (observations, summaries, descriptions): a sentence
 * about what the inputs show; NULL when `f` is not one of them. */
json_t *dspy__sim_propose_description(const struct dspy__sim_prompt *p,
                                      const struct dspy__sim_field *f, uint64_t h);

/* ---- Answers (sim_answer.c) ---- */

struct dspy__sim_answer_opts {
    uint64_t seed;
    uint64_t req_hash;     /* hash of the request content (see docs/simulator.md) */
    unsigned choice;       /* index among n choices */
    double temperature;    /* absent = 0 */
    unsigned reply_tokens; /* plain replies: exact length in tokens; 0 = natural */
    json_t *json_schema;   /* response_format json_schema's schema, or NULL (borrowed) */
    bool json_object;      /* response_format json_object */
    double quality;        /* the model's accuracy factor (model_quality); 0 = 1 */
};

/* The reply content for one choice, appended to out. */
dspy_status dspy__sim_answer(const struct dspy__sim_prompt *p,
                             const struct dspy__sim_answer_opts *o, struct dspy_buf *out);
/* A value valid for the JSON schema s (root holds $defs). New reference. */
json_t *dspy__sim_schema_value(json_t *s, json_t *root, uint64_t h, const struct dspy__sim_view *kw,
                               size_t nkw, int depth);

/* ---- Arith task pack (sim_arith.c) ---- */

struct dspy__sim_arith {
    int kind; /* template number */
    long a, b, c;
    int op1, op2; /* verb indices for the templates that take verbs */
    char name[16];
    char item[16];
    bool she;
    long answer;       /* the true answer */
    size_t start, len; /* where the question lies in the searched text */
};

/* Find the first arith question in s. */
bool dspy__sim_arith_find(const char *s, size_t n, struct dspy__sim_arith *q);
/* Question number `index` of the set drawn with `seed`. */
dspy_status dspy__sim_arith_generate(uint64_t seed, uint64_t index, struct dspy_buf *q,
                                     long *answer);

struct dspy__sim_accuracy {
    double p;           /* probability of a correct answer */
    int demos_right;    /* demos that solve an arith question correctly */
    int demos_wrong;    /* demos with an arith question and a wrong or missing answer */
    bool reasoning;     /* the signature has a reasoning output field */
    double instruction; /* instruction keyword bonus */
};
void dspy__sim_arith_accuracy(const struct dspy__sim_prompt *p, struct dspy__sim_accuracy *acc);
/* The answer the simulator gives: true or plausibly wrong, by the accuracy draw. */
long dspy__sim_arith_answer(const struct dspy__sim_prompt *p, const struct dspy__sim_arith *q,
                            const struct dspy__sim_answer_opts *o, bool *correct);
/* Short step-by-step text that ends at `claimed`. */
dspy_status dspy__sim_arith_reasoning(const struct dspy__sim_arith *q, long claimed,
                                      struct dspy_buf *out);

/* ---- Facts task pack (sim_facts.c) ---- */

#define DSPY__SIM_FACTS_ACC 0.92     /* right answers when the supporting passages are shown */
#define DSPY__SIM_FACTS_ACC_COT 0.96 /* the same with a reasoning output field */

struct dspy__sim_facts_q {
    int hops; /* 1: "What is the <attr2> of <town>?"; 2: "... of the <attr1> of <town>?" */
    int attr1, attr2;
    char town[32];
};

/* Find the first facts question in s. */
bool dspy__sim_facts_find(const char *s, size_t n, struct dspy__sim_facts_q *q);
/* The answer to give (into out): true and right when the prompt's inputs hold the
 * supporting facts and the accuracy draw from `h` says so, else a plausible wrong word. */
bool dspy__sim_facts_answer(const struct dspy__sim_prompt *p, const struct dspy__sim_facts_q *q,
                            uint64_t h, bool reasoning, double quality, char *out, size_t cap);

#define DSPY__SIM_FACTS_RANK_ACC 0.9 /* rankings that put the supporting passages first */
#define DSPY__SIM_RANK_MAX 64        /* documents a ranking answer reads */

/* An answer for a ranking prompt (an output `ranked_documents` over an input `documents`
 * in DSPy's numbered-list layout): the document numbers, best first, as a JSON list (a
 * list value when `as_list`, else its text). For a facts question in the input `query`,
 * the passages holding its supporting facts go first with probability
 * DSPY__SIM_FACTS_RANK_ACC (drawn from `h`), the others after them in their order;
 * otherwise (and for any other query) the documents keep their order. NULL when the prompt
 * has no `documents` input. */
json_t *dspy__sim_facts_rank(const struct dspy__sim_prompt *p, uint64_t h, bool as_list);

/* ---- Embeddings (sim_embed.c) ---- */

/* Hashed word and character-trigram features, L2-normalized, into out[0..dim). */
void dspy__sim_embed(const char *s, size_t n, float *out, unsigned dim);

/* ---- Chat requests (sim_chat.c) ---- */

#define DSPY__SIM_MAX_CHOICES 128

/* A chat-completions request as read from its JSON body. */
struct dspy__sim_chat {
    const char *model; /* borrowed from the body, as are the strings below */
    size_t n;          /* choices */
    long max_tokens;   /* 0 = no limit */
    double temperature;
    bool stream, include_usage, ignore_eos, json_object;
    json_t *schema;             /* response_format json_schema (borrowed from the body) */
    struct dspy__sim_msg *msgs; /* owned; texts borrow the body or parts */
    size_t n_msgs;
    size_t images;
    struct dspy_buf parts; /* texts of messages whose content is an array of parts */
};

/* Why a request is refused: the 400 answer's param, code and message. */
struct dspy__sim_bad {
    char param[64];
    const char *code; /* static */
    char message[256];
};

void dspy__sim_chat_init(struct dspy__sim_chat *c);
void dspy__sim_chat_release(struct dspy__sim_chat *c);
/* Check a request body as OpenAI does and read it into c (initialized); false with why
 * filled when it is refused. Untrusted input: never more than the body holds. */
bool dspy__sim_chat_parse(json_t *body, struct dspy__sim_chat *c, struct dspy__sim_bad *why);
/* Everything in the body that changes the answer, and nothing that only changes its
 * delivery (stream, n, max_tokens, ...), hashed. */
uint64_t dspy__sim_request_hash(json_t *body);

/* ---- Real embeddings (sim_minilm.c) ---- */

/* Load the model when o->embedder is "minilm" (s->minilm stays NULL for "hash"). */
dspy_status dspy__sim_minilm_open(struct dspy_sim *s, const struct dspy_sim_options *o,
                                  struct dspy_error *err);
dspy_status dspy__sim_minilm_embed(struct dspy_sim *s, const char *text, size_t n, float *out);
/* The model's token count of a text ([CLS] and [SEP] included), for usage. */
size_t dspy__sim_minilm_tokens(struct dspy_sim *s, const char *text, size_t n);

/* ---- The running simulator (sim.c, sim_serve.c, sim_chat.c) ---- */

enum dspy__sim_fault {
    DSPY__SIM_F_NONE = -1,
    DSPY__SIM_F_429,
    DSPY__SIM_F_500,
    DSPY__SIM_F_503,
    DSPY__SIM_F_TIMEOUT,
    DSPY__SIM_F_DROP,
    DSPY__SIM_F_MALFORMED,
    DSPY__SIM_F_TRUNCATE,
    DSPY__SIM_F_COUNT
};

struct dspy_sim {
    struct dspy_sim_options o; /* strings point at the copies below */
    char *bind, *model, *api_key, *record_path;
    struct dspy__srv *srv;       /* NULL once stopped */
    struct dspy__srv_stats last; /* the server's counters when it stopped */
    FILE *record;
    pthread_mutex_t record_lock; /* one line at a time */
    pthread_mutex_t qlock;       /* guards slots and queue */
    uint64_t *slots;             /* capacity model: min-heap of times each slot frees up */
    uint64_t *queue;             /* min-heap of start times of requests still waiting */
    size_t qlen, qcap;
    atomic_uint_fast64_t attempts; /* draws of the fault and jitter sequences */
    atomic_uint_fast64_t ids;
    atomic_uint_fast64_t by_status[600];
    atomic_uint_fast64_t faults[DSPY__SIM_F_COUNT];
    atomic_uint_fast64_t streams, completion_tokens;
    uint64_t start_ns;
    dspy_embedder *minilm; /* embedder "minilm": real embeddings (sim_minilm.c), else NULL */
    struct {
        char model[128];
        double q;
    } quality[DSPY_SIM_MAX_QUALITY]; /* model_quality, parsed */
    size_t nquality;
};

/* The accuracy factor of a request naming `model` (model_quality; 1 when not named). */
double dspy__sim_model_quality(const struct dspy_sim *s, const char *model);

/* Per-attempt draws from the seeded sequence: which fault (or none) and a jitter factor
 * u in [-1, 1]. Not a function of the request, so a retry can succeed. */
enum dspy__sim_fault dspy__sim_draw(struct dspy_sim *s, double *jitter_u);
/* Answer a fault that needs no content (429, 500, 503, timeout, drop); false otherwise. */
bool dspy__sim_fault_answer(struct dspy_sim *s, struct dspy__srv_req *req, enum dspy__sim_fault f);
/* 401 unless the API key matches (when one is configured); false when answered. */
bool dspy__sim_auth(struct dspy_sim *s, struct dspy__srv_req *req);
/* The body as a JSON object, or NULL after answering 400. */
json_t *dspy__sim_body_json(struct dspy__srv_req *req);
/* Capacity model: when a request needing service_ns starts; false if the queue is full. */
bool dspy__sim_admit(struct dspy_sim *s, uint64_t now, uint64_t service_ns, uint64_t *start);
/* Refuse a request for a full queue. */
void dspy__sim_queue_full(struct dspy_sim *s, struct dspy__srv_req *req);
/* Scale a duration by the jitter draw: ms * (1 + jitter * u), in ns, never negative. */
uint64_t dspy__sim_ns(const struct dspy_sim *s, double ms, double u);
/* Counts an answer's status in by_status: the server's on_status hook, so that every
 * answer is counted, the server's own 404/405/413/503 included. */
void dspy__sim_count(int status, void *sim);
/* Answer with a body at due, applying malformed/truncate faults. */
void dspy__sim_send_json(struct dspy_sim *s, struct dspy__srv_req *req, struct dspy_buf *body,
                         uint64_t due, enum dspy__sim_fault f);
dspy_status dspy__sim_routes(struct dspy_sim *s);
void dspy__sim_record(struct dspy__srv_req *req, void *ud);
void dspy__sim_chat(struct dspy__srv_req *req, void *ud);

#endif
