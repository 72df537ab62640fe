/* Token counts and ids from OpenAI's BPE encodings, cl100k_base and o200k_base, exactly as
 * tiktoken gives them (retrieve layer). The rank files are read from local files
 * (scripts/fetch-tiktoken.sh puts them in models/tiktoken/); nothing is downloaded at run
 * time. See docs/retrieve.md#token-counts. */
#ifndef DSPYC_TOKENS_H
#define DSPYC_TOKENS_H

#include <stdint.h>

#include <jansson.h>

#include <dspyc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Environment variable naming the folder of the rank files when the caller does not. */
#define DSPY_TOKENIZER_DIR_ENV "DSPYC_TIKTOKEN_DIR"

/** Recognize the encoding's special tokens (`<|endoftext|>` and the rest) in the text and
 * give each its own id. Off by default: the text is ordinary text, as tiktoken's
 * encode_ordinary() and the OpenAI API read a user's message. */
#define DSPY_TOKENS_SPECIAL 1u

/** A loaded encoding: a few MB of ranks, read-only after dspy_tokenizer_open().
 * Threading: every call but dspy_tokenizer_free() may run on many threads at once. */
typedef struct dspy_tokenizer dspy_tokenizer;

/** The encoding a model's name uses: "o200k_base" (gpt-4o*, gpt-4.1*, gpt-4.5*, gpt-5*,
 * o1*, o3*, o4*, chatgpt-4o*), "cl100k_base" (gpt-4*, gpt-3.5*, text-embedding-3*,
 * text-embedding-ada-002), or NULL when unknown, so the caller falls back. A provider
 * prefix ("openai/gpt-4o") is skipped. Static storage. */
DSPY_EXTERN const char *dspy_tokenizer_encoding_for_model(const char *model);

/** Open encoding `encoding` ("cl100k_base" or "o200k_base") from `dir`/<encoding>.tiktoken
 * (lines "base64-token rank", tiktoken's own format). `dir` NULL: $DSPYC_TIKTOKEN_DIR,
 * else models/tiktoken in the folder above the running program's. Errors:
 * DSPY_ENOTFOUND (unknown encoding, or no rank file: run scripts/fetch-tiktoken.sh),
 * DSPY_EPARSE (a bad line, named by file and line), DSPY_EIO, DSPY_ENOMEM. On error *out
 * is NULL. */
DSPY_EXTERN dspy_status dspy_tokenizer_open(const char *encoding, const char *dir,
                                            dspy_tokenizer **out, struct dspy_error *err);
/** The same for a model's name; DSPY_ENOTFOUND when dspy_tokenizer_encoding_for_model()
 * does not know it. */
DSPY_EXTERN dspy_status dspy_tokenizer_open_model(const char *model, const char *dir,
                                                  dspy_tokenizer **out, struct dspy_error *err);
/** Release everything; NULL is a no-op. */
DSPY_EXTERN void dspy_tokenizer_free(dspy_tokenizer *t);
/** The encoding's name, e.g. "o200k_base" (static storage). */
DSPY_EXTERN const char *dspy_tokenizer_name(const dspy_tokenizer *t);

/** Encode `len` bytes of UTF-8 text. *ids (caller owns, dspy_free) receives *n ids; an
 * empty text gives *n 0 and *ids NULL. Invalid UTF-8 is DSPY_EUTF8 with err->offset at the
 * first bad byte (tiktoken takes Python strings, which cannot hold it). */
DSPY_EXTERN dspy_status dspy_tokenizer_encode(const dspy_tokenizer *t, const char *text, size_t len,
                                              unsigned flags, uint32_t **ids, size_t *n,
                                              struct dspy_error *err);
/** The number of ids dspy_tokenizer_encode() would give, without storing them. */
DSPY_EXTERN dspy_status dspy_tokenizer_count(const dspy_tokenizer *t, const char *text, size_t len,
                                             unsigned flags, size_t *n, struct dspy_error *err);
/** The bytes of token `id` (borrowed until dspy_tokenizer_free()) in *bytes, *len; false
 * for an id the encoding does not have. Special tokens give their text. */
DSPY_EXTERN bool dspy_tokenizer_token(const dspy_tokenizer *t, uint32_t id, const char **bytes,
                                      size_t *len);

/** Prompt tokens of chat `messages` (an array of {"role", "content", optional "name"}) as
 * OpenAI counts them for its chat models: 3 per message, plus the tokens of each string
 * value (role, content, name), plus 1 for a name, plus 3 priming the reply. A content that
 * is an array of parts counts its "text" parts. DSPY_EINVAL for a malformed message,
 * DSPY_EUTF8 as above. */
DSPY_EXTERN dspy_status dspy_tokenizer_count_messages(const dspy_tokenizer *t,
                                                      const json_t *messages, long *n,
                                                      struct dspy_error *err);

#ifdef __cplusplus
}
#endif

#endif
