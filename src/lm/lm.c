/* The LM client (lm layer): OpenAI-compatible chat completions. Request bodies are written
 * straight into a bounded buffer and sent through the handle's event-loop engine
 * (net/engine.h), which applies retries, timeouts and rate limits; responses are read with
 * jansson, and HTTP failures are mapped to DSPY_ELM_* classes. The API key never reaches a
 * log line or an error message. */
#include <ctype.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/lm.h>

#include "base/ascii.h"
#include "base/buf.h"
#include "base/status.h"
#include "base/fmtfloat.h"
#include "base/jsonw.h"
#include "lm/lm_handle.h"

#define LM_ERROR_TEXT 300 /* bytes of the endpoint's error message we report */
#define LM_KEY_FILE_MAX 4096

/* ---- API key ---------------------------------------------------------------------- */

static void wipe(char *s)
{
    if (!s)
        return;
    volatile char *p = s;
    while (*p)
        *p++ = '\0';
}

static char *trimmed_copy(const char *s, size_t n)
{
    while (n && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    return n ? dspy_strndup(s, n) : NULL;
}

static dspy_status key_from_file(const char *path, char **key, struct dspy_error *err)
{
    char line[LM_KEY_FILE_MAX];
    FILE *f = fopen(path, "r");
    if (!f) {
        dspy__err(err, DSPY_EIO, "cannot open the API key file %s: %s", path, strerror(errno));
        dspy__err_file(err, path);
        return DSPY_EIO;
    }
    bool got = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    if (got)
        *key = trimmed_copy(line, strcspn(line, "\r\n"));
    wipe(line);
    if (!got || !*key) {
        dspy__err(err, DSPY_EINVAL, "the API key file %s has no key on its first line", path);
        dspy__err_file(err, path);
        return DSPY_EINVAL;
    }
    return DSPY_OK;
}

/* opts->api_key, else the environment variable, else the file's first line, else none. */
/* Where the key comes from: the options' key; else a variable named explicitly (then the
 * file when it is unset); else a file named explicitly, which beats the ambient
 * $OPENAI_API_KEY (an explicit choice wins over the environment, as curl's and LiteLLM's
 * users expect); else $OPENAI_API_KEY. NULL when none is set. */
static const char *key_env(const struct dspy_lm_options *o)
{
    if (o->api_key_env)
        return o->api_key_env;
    return o->api_key_file ? NULL : DSPY_LM_DEFAULT_API_KEY_ENV;
}

static dspy_status resolve_key(const struct dspy_lm_options *o, char **key, struct dspy_error *err)
{
    *key = NULL;
    if (o->api_key && *o->api_key)
        return (*key = dspy_strdup(o->api_key)) ? DSPY_OK
                                                : dspy__err(err, DSPY_ENOMEM, "out of memory");
    const char *var = key_env(o), *env = var ? getenv(var) : NULL;
    if (env && *env) {
        *key = trimmed_copy(env, strlen(env));
        return *key ? DSPY_OK : dspy__err(err, DSPY_ENOMEM, "out of memory");
    }
    if (o->api_key_file)
        return key_from_file(o->api_key_file, key, err);
    return DSPY_OK;
}

/* Where resolve_key found the key, for messages (never the key itself). */
static const char *key_source(const struct dspy_lm_options *o)
{
    const char *var = key_env(o), *env = var ? getenv(var) : NULL;
    if (o->api_key && *o->api_key)
        return "the options";
    if (env && *env)
        return var;
    return o->api_key_file ? o->api_key_file : "nowhere";
}

/* ---- handle ------------------------------------------------------------------------- */

static atomic_uint_fast64_t next_id = 1;

/* Does the cache put a namespace of its own into keys? Then a request that names none must
 * be keyed through dspy_cache_key(), the one call that knows it. */
static dspy_status cache_has_ns(dspy_cache *c, bool *has)
{
    struct dspy_cache_key a, b;
    json_t *probe = json_object();
    dspy_status rc = probe ? DSPY_OK : DSPY_ENOMEM;
    if (!rc)
        rc = dspy_cache_key(c, probe, NULL, &a, NULL);
    if (!rc)
        rc = dspy_cache_key_from_json(probe, NULL, NULL, &b, NULL);
    *has = !rc && memcmp(a.bytes, b.bytes, sizeof(a.bytes)) != 0;
    json_decref(probe);
    return rc;
}

static dspy_status attach_cache(dspy_lm *lm, const struct dspy_lm_options *o,
                                struct dspy_error *err)
{
    lm->cache = o->cache;
    lm->cache_ctl = o->cache_ctl;
    lm->cache_ctl.ns = NULL;
    if (!lm->cache)
        return DSPY_OK;
    if (o->cache_ctl.ns) {
        if (strlen(o->cache_ctl.ns) > DSPY_CACHE_NS_MAX)
            return dspy__err(err, DSPY_EINVAL, "cache namespace longer than %d bytes",
                             DSPY_CACHE_NS_MAX);
        if (!(lm->ns_copy = dspy_strdup(o->cache_ctl.ns)))
            return dspy__err(err, DSPY_ENOMEM, "out of memory");
        lm->cache_ctl.ns = lm->ns_copy;
    }
    if (cache_has_ns(lm->cache, &lm->cache_has_ns))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    return DSPY_OK;
}

static dspy_status make_headers(dspy_lm *lm)
{
    const char *lines[4];
    size_t n = 0;
    struct dspy_buf auth;
    dspy__buf_init(&auth, LM_KEY_FILE_MAX + 64);
    lines[n++] = "Content-Type: application/json";
    lines[n++] = "Expect:"; /* no 100-continue round trip for large prompts */
    lines[n++] = "User-Agent: dspyc/" DSPY_VERSION_STRING;
    if (lm->api_key) {
        if (dspy__buf_addf(&auth, "Authorization: Bearer %s", lm->api_key)) {
            dspy__buf_release(&auth);
            return DSPY_ENOMEM;
        }
        lines[n++] = auth.ptr;
    }
    lm->headers = dspy__engine_headers_new(lines, n);
    if (auth.ptr)
        wipe(auth.ptr);
    dspy__buf_release(&auth);
    return lm->headers ? DSPY_OK : DSPY_ENOMEM;
}

static uint64_t secs_ns(double s)
{
    return s > 0 ? (uint64_t)(s * 1e9) : 0;
}

/* The event loop, retry policy and limiter of a handle that talks HTTP. One engine (and
 * loop thread) per handle: its lifetime is the handle's, and the limits it applies are the
 * handle's endpoint+model. */
static dspy_status open_engine(dspy_lm *lm, const struct dspy_lm_options *o, struct dspy_error *err)
{
    struct dspy__engine_options eo = DSPY__ENGINE_OPTIONS_INIT;
    struct dspy__retry_policy rp = DSPY__RETRY_POLICY_INIT;
    eo.connect_timeout_ns = secs_ns(o->connect_timeout_s);
    if (o->retry_base_s < 0 || o->retry_cap_s < 0 || o->deadline_s < 0 ||
        o->requests_per_minute < 0 || o->tokens_per_minute < 0)
        return dspy__err(err, DSPY_EINVAL, "LM retry and rate-limit options must not be negative");
    rp.max_attempts = o->max_attempts ? o->max_attempts : 1;
    rp.base_ns = secs_ns(o->retry_base_s);
    rp.cap_ns = o->retry_cap_s > 0 ? secs_ns(o->retry_cap_s) : rp.base_ns;
    rp.deadline_ns = lm->deadline_ns = secs_ns(o->deadline_s);
    lm->retry = rp;
    if (!(lm->engine = dspy__engine_new(&eo, err)))
        return err && err->code ? err->code : DSPY_ENOMEM;
    if (make_headers(lm))
        return dspy__err(err, DSPY_ENOMEM, "cannot set up the HTTP client");
    if (o->requests_per_minute > 0 || o->tokens_per_minute > 0 || o->max_concurrency ||
        o->max_waiting) {
        struct dspy__ratelimit_options ro = DSPY__RATELIMIT_OPTIONS_INIT;
        ro.requests_per_minute = o->requests_per_minute;
        ro.tokens_per_minute = o->tokens_per_minute;
        ro.max_concurrency = o->max_concurrency;
        ro.max_waiting = o->max_waiting;
        if (!(lm->limiter = dspy__engine_limiter_get(lm->engine, "lm", &ro)))
            return dspy__err(err, DSPY_ENOMEM, "cannot set up the rate limiter");
    }
    return DSPY_OK;
}

dspy_status dspy_lm_new(const struct dspy_lm_options *opts, dspy_lm **out, struct dspy_error *err)
{
    dspy_status rc;
    struct dspy_buf url;
    if (!opts || !out)
        return dspy__err(err, DSPY_EINVAL, "dspy_lm_new: options and out are required");
    if (!opts->base_url || !*opts->base_url)
        return dspy__err(err, DSPY_EINVAL,
                         "the LM needs a base URL (e.g. http://127.0.0.1:8000/v1)");
    if (!opts->model || !*opts->model)
        return dspy__err(err, DSPY_EINVAL, "the LM needs a model name");
    long bad;
    if ((bad = dspy__find_ctl(opts->model)) >= 0)
        return dspy__err(err, DSPY_EINVAL,
                         "the model name has a control character (byte 0x%02x "
                         "at offset %ld): refused, it would corrupt the request",
                         (unsigned char)opts->model[bad], bad);
    if ((bad = dspy__find_ctl(opts->base_url)) >= 0)
        return dspy__err(err, DSPY_EINVAL,
                         "the base URL has a control character (byte 0x%02x "
                         "at offset %ld)",
                         (unsigned char)opts->base_url[bad], bad);
    dspy_lm *lm = dspy_calloc(1, sizeof(*lm));
    if (!lm)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    lm->timeout_s = opts->timeout_s;
    lm->temperature = opts->temperature;
    lm->max_tokens = opts->max_tokens;
    lm->max_response_bytes = opts->max_response_bytes ? opts->max_response_bytes
                                                      : DSPY_LM_DEFAULT_MAX_RESPONSE_BYTES;
    lm->transport = opts->transport;
    lm->transport_userdata = opts->transport_userdata;
    lm->id = atomic_fetch_add(&next_id, 1);
    if ((rc = attach_cache(lm, opts, err)))
        goto free_lm;
    if (!(lm->model = dspy_strdup(opts->model))) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto free_lm;
    }
    lm->wire_model = strncmp(lm->model, "openai/", 7) ? lm->model : lm->model + 7;
    lm->structured = opts->structured_outputs == DSPY_STRUCTURED_ON ||
                     (opts->structured_outputs == DSPY_STRUCTURED_AUTO &&
                      dspy_model_supports_response_schema(lm->model));

    size_t blen = strlen(opts->base_url);
    while (blen && opts->base_url[blen - 1] == '/')
        blen--;
    dspy__buf_init(&url, 8192);
    if ((rc = dspy__buf_add(&url, opts->base_url, blen)) ||
        (rc = dspy__buf_adds(&url, "/chat/completions"))) {
        dspy__buf_release(&url);
        rc = dspy__err(err, rc, rc == DSPY_ETOOBIG ? "the base URL is too long" : "out of memory");
        goto free_lm;
    }
    lm->url = dspy__buf_detach(&url, NULL);

    if ((rc = resolve_key(opts, &lm->api_key, err)))
        goto free_lm;
    if (lm->api_key && (bad = dspy__find_ctl(lm->api_key)) >= 0) {
        /* CR or LF would end the Authorization header and start one of the key's choosing.
         * Name where it came from, never the key. */
        rc = dspy__err(err, DSPY_EINVAL,
                       "the API key (from %s) has a control character "
                       "(byte 0x%02x at offset %ld): refused, it would inject HTTP headers",
                       key_source(opts), (unsigned char)lm->api_key[bad], bad);
        goto free_lm;
    }
    if (!lm->transport && (rc = open_engine(lm, opts, err)))
        goto free_lm;
    *out = lm;
    return DSPY_OK;

free_lm:
    dspy_lm_free(lm);
    return rc;
}

void dspy_lm_free(dspy_lm *lm)
{
    if (!lm)
        return;
    dspy__engine_free(lm->engine); /* before the headers its calls borrow */
    dspy__engine_headers_free(lm->headers);
    wipe(lm->api_key);
    dspy_free(lm->api_key);
    dspy_free(lm->ns_copy);
    dspy_free(lm->url);
    dspy_free(lm->model);
    dspy_free(lm);
}

const char *dspy_lm_model(const dspy_lm *lm)
{
    return lm ? lm->model : NULL;
}

double dspy__lm_temperature(const dspy_lm *lm)
{
    return lm ? lm->temperature : NAN;
}

/* ---- request body -------------------------------------------------------------------- */

dspy_status dspy__lm_encode_message(struct dspy_buf *b, const char *role, const char *content,
                                    size_t len)
{
    dspy_status rc = dspy__buf_add(b, "{\"role\":", 8);
    if (!rc)
        rc = dspy__buf_add_json_str(b, role, strlen(role));
    if (!rc)
        rc = dspy__buf_add(b, ",\"content\":", 11);
    if (!rc)
        rc = dspy__buf_add_json_str(b, content, len);
    return rc ? rc : dspy__buf_addc(b, '}');
}

dspy_status dspy__lm_encode_message_canon(struct dspy_buf *b, const char *role, const char *content,
                                          size_t len)
{
    dspy_status rc = dspy__buf_add(b, "{\"content\":", 11);
    if (!rc)
        rc = dspy__buf_add_json_str(b, content, len);
    if (!rc)
        rc = dspy__buf_add(b, ",\"role\":", 8);
    if (!rc)
        rc = dspy__buf_add_json_str(b, role, strlen(role));
    return rc ? rc : dspy__buf_addc(b, '}');
}

/* ",\"key\":<v>" without printf: this runs on every request. */
static dspy_status add_long_key(struct dspy_buf *b, const char *key, long v)
{
    char num[24];
    size_t i = sizeof(num);
    unsigned long u = v < 0 ? 0UL - (unsigned long)v : (unsigned long)v;
    do {
        num[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        num[--i] = '-';
    dspy_status rc = dspy__buf_addc(b, ',');
    if (!rc)
        rc = dspy__buf_add_json_str(b, key, strlen(key));
    if (!rc)
        rc = dspy__buf_addc(b, ':');
    return rc ? rc : dspy__buf_add(b, num + i, sizeof(num) - i);
}

static dspy_status add_number_key(struct dspy_buf *b, const char *key, double v)
{
    char num[DSPY__FLOAT_MAX];
    size_t n = dspy__float_fmt(num, v, DSPY__FLOAT_PYTHON);
    dspy_status rc = dspy__buf_addc(b, ',');
    if (!rc)
        rc = dspy__buf_add_json_str(b, key, strlen(key));
    if (!rc)
        rc = dspy__buf_addc(b, ':');
    return rc ? rc : dspy__buf_add(b, num, n);
}

/* Keys the body already carries (or must never carry) win over `extra`. */
static bool extra_key_skipped(const char *key, const struct dspy__lm_call *c, double temp,
                              long max_tokens)
{
    if (!strcmp(key, "model") || !strcmp(key, "messages") || !strcmp(key, "rollout_id") ||
        !strcmp(key, "cache"))
        return true;
    if (!strcmp(key, "temperature"))
        return !isnan(temp);
    if (!strcmp(key, "max_tokens"))
        return max_tokens >= 0;
    if (!strcmp(key, "top_p"))
        return !isnan(c->top_p);
    if (!strcmp(key, "n"))
        return c->n > 0;
    if (!strcmp(key, "response_format"))
        return c->response_format != NULL;
    return false;
}

dspy_status dspy__lm_encode_body(const dspy_lm *lm, const struct dspy__lm_call *c,
                                 struct dspy_buf *b, struct dspy__lm_body_marks *mk)
{
    double temp = isnan(c->temperature) ? lm->temperature : c->temperature;
    long max_tokens = c->max_tokens >= 0 ? c->max_tokens : lm->max_tokens;
    dspy_status rc;
    mk->temperature = temp;
    mk->max_tokens = max_tokens;
    mk->user_off = mk->user_len = 0;
    /* One allocation for the usual body: user text may grow a little when escaped. */
    size_t hint = c->messages_len + c->user_len + c->user_len / 8 + c->response_format_len + 256;
    if ((rc = dspy__buf_reserve(b, hint)))
        return rc;
    mk->model_off = 9;
    if ((rc = dspy__buf_add(b, "{\"model\":", 9)) ||
        (rc = dspy__buf_add_json_str(b, lm->wire_model, strlen(lm->wire_model))))
        return rc;
    mk->model_len = b->len - mk->model_off;
    if ((rc = dspy__buf_add(b, ",\"messages\":[", 13)) ||
        (rc = dspy__buf_add(b, c->messages, c->messages_len)))
        return rc;
    if (c->user) {
        if (c->messages_len && (rc = dspy__buf_addc(b, ',')))
            return rc;
        /* {"role":"user","content": is 25 bytes; the escaped text follows up to '}' */
        mk->user_off = b->len + 25;
        if ((rc = dspy__lm_encode_message(b, "user", c->user, c->user_len)))
            return rc;
        mk->user_len = b->len - 1 - mk->user_off;
    }
    if ((rc = dspy__buf_addc(b, ']')))
        return rc;
    if (!isnan(temp) && (rc = add_number_key(b, "temperature", temp)))
        return rc;
    if (max_tokens >= 0 && (rc = add_long_key(b, "max_tokens", max_tokens)))
        return rc;
    if (!isnan(c->top_p) && (rc = add_number_key(b, "top_p", c->top_p)))
        return rc;
    if (c->n > 0 && (rc = add_long_key(b, "n", c->n)))
        return rc;
    if (c->response_format) {
        if ((rc = dspy__buf_add(b, ",\"response_format\":", 19)) ||
            (rc = dspy__buf_add(b, c->response_format, c->response_format_len)))
            return rc;
    }
    if (c->extra) {
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)(uintptr_t)c->extra, key, v) {
            if (extra_key_skipped(key, c, temp, max_tokens))
                continue;
            if ((rc = dspy__buf_addc(b, ',')) ||
                (rc = dspy__buf_add_json_str(b, key, strlen(key))) ||
                (rc = dspy__buf_addc(b, ':')) ||
                (rc = dspy__json_write(b, v, DSPY__JSON_COMPACT, 0)))
                return rc;
        }
    }
    return dspy__buf_addc(b, '}');
}

/* ---- errors and responses ------------------------------------------------------------- */

static bool contains_ci(const char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; m <= n && i <= n - m; i++) {
        size_t j = 0;
        while (j < m && tolower((unsigned char)hay[i + j]) == needle[j])
            j++;
        if (j == m)
            return true;
    }
    return false;
}

/* The endpoint's own words for an error: error.message (+ error.code) of an OpenAI error
 * object, a string "error" or "detail", or else the start of the body. */
static void error_text(const char *body, size_t len, char *out, size_t cap)
{
    out[0] = '\0';
    if (!body || !len)
        return;
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *e = root ? json_object_get(root, "error") : NULL;
    const char *msg = NULL, *code = NULL;
    if (json_is_object(e)) {
        msg = json_string_value(json_object_get(e, "message"));
        code = json_string_value(json_object_get(e, "code"));
        if (!code)
            code = json_string_value(json_object_get(e, "type"));
    } else if (json_is_string(e)) {
        msg = json_string_value(e);
    } else if (root) {
        msg = json_string_value(json_object_get(root, "detail"));
        if (!msg)
            msg = json_string_value(json_object_get(root, "message"));
    }
    if (msg || code)
        snprintf(out, cap, "%s%s%s%s", msg ? msg : "", code ? " (" : "", code ? code : "",
                 code ? ")" : "");
    else
        snprintf(out, cap, "%.*s", (int)(len < cap ? len : cap - 1), body);
    json_decref(root);
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
}

dspy_status dspy_lm_classify_http(long http_status, const char *body, size_t len)
{
    if (http_status >= 200 && http_status < 300)
        return DSPY_OK;
    if (http_status == 401 || http_status == 403)
        return DSPY_ELM_AUTH;
    if (http_status == 429)
        return DSPY_ELM_RATE_LIMIT;
    if (http_status >= 400 && http_status < 500) {
        char text[1024];
        error_text(body, len, text, sizeof(text));
        size_t n = strlen(text);
        if (http_status == 400 &&
            (contains_ci(text, n, "context_length") || contains_ci(text, n, "context length") ||
             contains_ci(text, n, "maximum context") || contains_ci(text, n, "context window")))
            return DSPY_ELM_CONTEXT;
        return DSPY_ELM_BAD_REQUEST;
    }
    if (http_status >= 500 && http_status < 600)
        return DSPY_ELM_SERVER;
    return DSPY_ELM_BAD_RESPONSE;
}

/* Replace every occurrence of the API key in `s` with "***". */
static void scrub_key(char *s, const char *key);

void dspy__lm_scrub_key(const dspy_lm *lm, char *s)
{
    if (lm)
        scrub_key(s, lm->api_key);
}

static void scrub_key(char *s, const char *key)
{
    size_t klen = key && s ? strlen(key) : 0;
    if (klen < 4)
        return;
    char *p;
    while ((p = strstr(s, key))) {
        memcpy(p, "***", 3);
        memmove(p + 3, p + klen, strlen(p + klen) + 1);
    }
}

static dspy_status http_error(const dspy_lm *lm, long status, const char *body, size_t len,
                              struct dspy_error *err)
{
    dspy_status rc = dspy_lm_classify_http(status, body, len);
    if (!err)
        return rc;
    char text[LM_ERROR_TEXT + 1];
    error_text(body, len, text, sizeof(text));
    dspy__err(err, rc, "LM endpoint answered HTTP %ld: %s", status, text[0] ? text : "(no body)");
    scrub_key(err->message, lm->api_key);
    err->http_status = (int)status;
    return rc;
}

/* ---- the exchange --------------------------------------------------------------------- */

/* The transport hook's exchange: the response body it returns is ours to free. */
static dspy_status transport_exchange(dspy_lm *lm, const char *body, size_t body_len, long *status,
                                      char **rbody, size_t *rlen, struct dspy_error *err)
{
    *status = 0;
    *rbody = NULL;
    *rlen = 0;
    dspy_error_clear(err);
    dspy_status rc = lm->transport(lm->transport_userdata, lm->url, body, body_len, status, rbody,
                                   rlen, err);
    if (rc) {
        dspy_free(*rbody);
        *rbody = NULL;
        if (err && !err->code)
            dspy__err(err, rc, "LM transport failed: %s", dspy_strerror(rc));
        return rc;
    }
    if (!*rbody)
        return dspy__err(err, DSPY_ELM_BAD_RESPONSE, "LM transport returned no body");
    if (*rlen > lm->max_response_bytes) {
        dspy_free(*rbody);
        *rbody = NULL;
        return dspy__err(err, DSPY_ETOOBIG, "LM response is larger than %zu bytes",
                         lm->max_response_bytes);
    }
    return DSPY_OK;
}

bool dspy__lm_calls_async(const dspy_lm *lm)
{
    return lm->engine && !lm->cache && !lm->transport;
}

dspy_cache *dspy__lm_cache(const dspy_lm *lm)
{
    return lm->cache;
}

void dspy__lm_cache_ctl(const dspy_lm *lm, const struct dspy_cache_ctl *over,
                        struct dspy_cache_ctl *out)
{
    *out = lm->cache_ctl;
    dspy__lm_cache_ctl_merge(out, over);
}

bool dspy_lm_structured_outputs(const dspy_lm *lm)
{
    return lm && lm->structured;
}

uint64_t dspy__lm_id(const dspy_lm *lm)
{
    return lm->id;
}

dspy_status dspy__lm_group_new(dspy_lm *lm, struct dspy__engine_group **g)
{
    *g = NULL;
    if (!lm->engine)
        return DSPY_OK;
    return (*g = dspy__engine_group_new(lm->engine)) ? DSPY_OK : DSPY_ENOMEM;
}

void dspy__lm_group_cancel(struct dspy__engine_group *g)
{
    if (g)
        dspy__engine_group_cancel(g);
}

void dspy__lm_group_free(struct dspy__engine_group *g)
{
    dspy__engine_group_free(g);
}

dspy_status dspy__lm_submit_body(dspy_lm *lm, struct dspy__engine_group *group, const char *body,
                                 size_t len, bool take_body, dspy__engine_done_fn on_done,
                                 void *userdata, struct dspy__engine_call **handle,
                                 struct dspy_error *err)
{
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = lm->url;
    r.headers = lm->headers;
    r.body = body;
    r.body_len = len;
    r.take_body = take_body;
    r.timeout_ns = secs_ns(lm->timeout_s);
    r.deadline_ns = lm->deadline_ns;
    r.max_response_bytes = lm->max_response_bytes;
    r.retry = &lm->retry;
    r.limiter = lm->limiter;
    if (lm->limiter)
        r.est_tokens = dspy__ratelimit_estimate_tokens(len, lm->max_tokens > 0
                                                                ? (uint64_t)lm->max_tokens
                                                                : 0);
    r.group = group;
    r.on_done = on_done;
    r.userdata = userdata;
    dspy_status rc = dspy__engine_submit(lm->engine, &r, handle, err);
    if (rc == DSPY_EBUSY)
        dspy__err(err, rc,
                  "LM request refused: too many requests already wait for the "
                  "rate limit (back off and retry)");
    return rc;
}

dspy_status dspy__lm_submit_raw(dspy_lm *lm, const struct dspy__lm_raw_request *q,
                                struct dspy_error *err)
{
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    if (!lm->engine)
        return dspy__err(err, DSPY_EINVAL, "raw LM requests need HTTP (no transport hook)");
    r.method = q->method;
    r.url = q->url ? q->url : lm->url;
    r.headers = lm->headers;
    r.body = q->body;
    r.body_len = q->len;
    r.take_body = q->take_body;
    r.timeout_ns = secs_ns(lm->timeout_s);
    r.deadline_ns = lm->deadline_ns;
    r.max_response_bytes = lm->max_response_bytes;
    r.retry = q->retry && !q->on_event ? &lm->retry : NULL;
    r.limiter = lm->limiter;
    if (lm->limiter)
        r.est_tokens = dspy__ratelimit_estimate_tokens(q->len, lm->max_tokens > 0
                                                                   ? (uint64_t)lm->max_tokens
                                                                   : 0);
    r.on_event = q->on_event;
    r.on_done = q->on_done;
    r.userdata = q->userdata;
    dspy_status rc = dspy__engine_submit(lm->engine, &r, NULL, err);
    if (rc == DSPY_EBUSY)
        dspy__err(err, rc,
                  "upstream request refused: too many requests already wait for its "
                  "rate limit (back off and retry)");
    return rc;
}

/* " (after N attempts)" on an error message when the call was retried. */
static void note_attempts(struct dspy_error *err, uint32_t attempts)
{
    size_t n = err ? strlen(err->message) : 0;
    if (err && attempts > 1 && n < sizeof(err->message))
        snprintf(err->message + n, sizeof(err->message) - n, " (after %u attempts)", attempts);
}

dspy_status dspy__lm_read_result(dspy_lm *lm, struct dspy__engine_call *call,
                                 const struct dspy__engine_result *res,
                                 struct dspy_lm_response *resp, char **body_out, size_t *body_len,
                                 struct dspy_error *err)
{
    dspy_status rc = res->status;
    memset(resp, 0, sizeof(*resp));
    resp->http_status = res->http_status;
    if (rc) {
        dspy__err(err, rc, "LM request failed: %s", res->error);
        scrub_key(err ? err->message : NULL, lm->api_key);
    } else if (res->http_status < 200 || res->http_status >= 300) {
        rc = http_error(lm, res->http_status, res->body, res->body_len, err);
    } else if ((rc = dspy__lm_parse_response(res->body, res->body_len, resp, err))) {
        if (err)
            err->http_status = (int)res->http_status;
    } else {
        if (lm->limiter && resp->usage.total_tokens > 0)
            dspy__engine_call_reconcile(call, (uint64_t)resp->usage.total_tokens);
        if (body_out && !(*body_out = dspy_strndup(res->body, res->body_len))) {
            dspy_lm_response_release(resp);
            rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        } else if (body_out) {
            *body_len = res->body_len;
        }
    }
    if (rc)
        note_attempts(err, res->attempts);
    resp->http_status = res->http_status;
    return rc;
}

dspy_status dspy__lm_send(dspy_lm *lm, struct dspy__engine_group *group, const char *body,
                          size_t len, struct dspy_lm_response *resp, char **body_out,
                          size_t *body_len, struct dspy_error *err)
{
    char *rbody = NULL;
    size_t rlen = 0;
    long status = 0;
    dspy_status rc;
    memset(resp, 0, sizeof(*resp));
    if (!lm->transport) {
        struct dspy__engine_call *call = NULL;
        const struct dspy__engine_result *res;
        if ((rc = dspy__lm_submit_body(lm, group, body, len, false, NULL, NULL, &call, err)))
            return rc;
        rc = dspy__engine_call_wait(call, 0, &res);
        if (!rc)
            rc = dspy__lm_read_result(lm, call, res, resp, body_out, body_len, err);
        else
            dspy__err(err, rc, "cannot wait for an LM call on the event loop's own thread");
        dspy__engine_call_release(call);
        return rc;
    }
    if ((rc = transport_exchange(lm, body, len, &status, &rbody, &rlen, err)))
        return rc;
    resp->http_status = status;
    if (status < 200 || status >= 300) {
        rc = http_error(lm, status, rbody, rlen, err);
        goto free_response;
    }
    if ((rc = dspy__lm_parse_response(rbody, rlen, resp, err)) && err)
        err->http_status = (int)status;
    resp->http_status = status;
    if (!rc && body_out) {
        *body_out = rbody;
        *body_len = rlen;
        return DSPY_OK;
    }

free_response:
    dspy_free(rbody);
    return rc;
}

dspy_status dspy__lm_complete_call(dspy_lm *lm, const struct dspy__lm_call *call,
                                   struct dspy_lm_response *resp, struct dspy_error *err)
{
    struct dspy_buf body;
    struct dspy__lm_body_marks marks;
    dspy_status rc;
    memset(resp, 0, sizeof(*resp));
    dspy__buf_init(&body, DSPY__LM_MAX_BODY);
    if ((rc = dspy__lm_encode_body(lm, call, &body, &marks))) {
        rc = rc == DSPY_ETOOBIG
                 ? dspy__err(err, rc, "LM request body is larger than %zu bytes", DSPY__LM_MAX_BODY)
                 : dspy__err(err, rc, "cannot encode the LM request: %s", dspy_strerror(rc));
        goto release_body;
    }
    if (lm->cache)
        rc = dspy__lm_cache_call(lm, call, body.ptr, body.len, &marks, resp, err);
    else
        rc = dspy__lm_send(lm, call->group, body.ptr, body.len, resp, NULL, NULL, err);

release_body:
    dspy__buf_release(&body);
    return rc;
}

dspy_status dspy__lm_request_key(dspy_lm *lm, const struct dspy__lm_call *call, bool fast,
                                 struct dspy_cache_key *key, struct dspy_error *err)
{
    struct dspy_buf body;
    struct dspy__lm_body_marks marks;
    struct dspy_cache_ctl ctl = lm->cache_ctl;
    dspy_status rc;
    if (!lm->cache)
        return dspy__err(err, DSPY_EINVAL, "the LM has no cache");
    dspy__lm_cache_ctl_merge(&ctl, call->ctl);
    dspy__buf_init(&body, DSPY__LM_MAX_BODY);
    if (!(rc = dspy__lm_encode_body(lm, call, &body, &marks)))
        rc = dspy__lm_cache_key(lm, call, body.ptr, body.len, &marks, &ctl, fast, key, err);
    dspy__buf_release(&body);
    return rc;
}

dspy_status dspy__lm_call_from_request(const struct dspy_lm_request *req, struct dspy_buf *msgs,
                                       struct dspy_buf *rf, struct dspy__lm_call *call,
                                       struct dspy_error *err)
{
    dspy_status rc;
    if (req->extra && !json_is_object(req->extra))
        return dspy__err(err, DSPY_EINVAL, "LM request \"extra\" must be a JSON object");
    for (size_t i = 0; i < json_array_size(req->messages); i++) {
        const json_t *m = json_array_get(req->messages, i);
        if (!json_is_object(m) || !json_is_string(json_object_get(m, "role")))
            return dspy__err(err, DSPY_EINVAL,
                             "LM request message %zu is not a {\"role\", \"content\"} object", i);
        if ((i && (rc = dspy__buf_addc(msgs, ','))) ||
            (rc = dspy__json_write(msgs, m, DSPY__JSON_COMPACT, 0)))
            goto too_big;
    }
    if (req->response_format &&
        (rc = dspy__json_write(rf, req->response_format, DSPY__JSON_COMPACT, 0)))
        goto too_big;
    *call = (struct dspy__lm_call)DSPY__LM_CALL_INIT;
    call->messages = msgs->ptr ? msgs->ptr : "";
    call->messages_len = msgs->len;
    call->temperature = req->temperature;
    call->max_tokens = req->max_tokens;
    call->top_p = req->top_p;
    call->n = req->n;
    call->response_format = req->response_format ? rf->ptr : NULL;
    call->response_format_len = rf->len;
    call->extra = req->extra;
    call->has_rollout_id = req->has_rollout_id;
    call->rollout_id = req->rollout_id;
    call->ctl = &req->cache;
    return DSPY_OK;

too_big:
    return dspy__err(err, rc, "cannot encode the LM request: %s", dspy_strerror(rc));
}

dspy_status dspy_lm_complete(dspy_lm *lm, const struct dspy_lm_request *req,
                             struct dspy_lm_response *resp, struct dspy_error *err)
{
    struct dspy_buf msgs, rf;
    struct dspy__lm_call call;
    dspy_status rc;
    if (resp)
        memset(resp, 0, sizeof(*resp));
    if (!lm || !req || !resp || !json_is_array(req->messages))
        return dspy__err(err, DSPY_EINVAL,
                         "dspy_lm_complete: lm, a messages array and resp are required");
    dspy__buf_init(&msgs, DSPY__LM_MAX_BODY);
    dspy__buf_init(&rf, DSPY__LM_MAX_BODY);
    if (!(rc = dspy__lm_call_from_request(req, &msgs, &rf, &call, err)))
        rc = dspy__lm_complete_call(lm, &call, resp, err);
    dspy__buf_release(&rf);
    dspy__buf_release(&msgs);
    return rc;
}

void dspy_lm_response_release(struct dspy_lm_response *resp)
{
    if (!resp)
        return;
    dspy_free(resp->texts); /* the one block that holds every string (lm_response.c) */
    memset(resp, 0, sizeof(*resp));
}

void dspy_lm_get_stats(dspy_lm *lm, struct dspy_lm_stats *st)
{
    struct dspy__engine_stats es;
    memset(st, 0, sizeof(*st));
    if (!lm || !lm->engine)
        return;
    dspy__engine_get_stats(lm->engine, &es);
    st->requests = es.submitted;
    st->attempts = es.attempts;
    st->retries = es.retries;
    st->ratelimit_waits = es.ratelimit_waits;
    st->rejected_busy = es.rejected_busy;
    st->failed = es.failed;
    st->in_flight = es.in_flight;
    st->pending = es.pending;
}
