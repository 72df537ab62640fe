/* The ColBERTv2 client (retrieve layer): DSPy's ColBERTv2(url) protocol, GET
 * url?query=...&k=... (or a JSON POST), {"topk": [{"text", "pid", "score"}]} back, the
 * passage's long_text being its text as DSPy sets it. One blocking libcurl transfer per
 * search, bounded answer. */
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "base/buf.h"
#include "base/status.h"
#include "retrieve/retrieve_int.h"

#define ANSWER_MAX ((size_t)16 << 20)

struct colbert {
    char *url;
    long timeout_ms;
    bool post;
};

static void colbert_free(void *impl)
{
    struct colbert *c = impl;
    if (!c)
        return;
    dspy_free(c->url);
    dspy_free(c);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct dspy_buf *b = userdata;
    return dspy__buf_add(b, data, size * nmemb) ? 0 : size * nmemb;
}

dspy_status dspy__colbert_read_topk(const char *where, const char *body, size_t len, size_t k,
                                    struct dspy_passage **out, size_t *nout, struct dspy_error *err)
{
    json_error_t je;
    dspy_status rc = DSPY_OK;
    json_t *doc = json_loadb(body, len, 0, &je);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return dspy__err(err, DSPY_EPARSE, "ColBERTv2 server %s: the answer is not a JSON object",
                         where);
    }
    json_t *e = json_object_get(doc, "error");
    if (e && json_is_true(e)) {
        json_t *m = json_object_get(doc, "message");
        rc = dspy__err(err, DSPY_EINVAL, "ColBERTv2 server %s returned an error: %s", where,
                       json_is_string(m) ? json_string_value(m) : "Unknown error");
        goto out;
    }
    json_t *topk = json_object_get(doc, "topk");
    if (!json_is_array(topk)) {
        rc = dspy__err(err, DSPY_EPARSE, "ColBERTv2 server %s: the answer has no \"topk\" list",
                       where);
        goto out;
    }
    size_t n = json_array_size(topk) < k ? json_array_size(topk) : k;
    struct dspy_passage *res = dspy_calloc(n ? n : 1, sizeof(*res));
    if (!res) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *p = json_array_get(topk, i), *text = json_object_get(p, "text"),
               *pid = json_object_get(p, "pid"), *score = json_object_get(p, "score");
        char idbuf[32];
        if (!json_is_string(text)) {
            dspy_passages_free(res, n);
            rc = dspy__err(err, DSPY_EPARSE, "ColBERTv2 server %s: topk[%zu] has no \"text\"",
                           where, i);
            dspy__err_field(err, "text");
            goto out;
        }
        res[i].text = dspy_strdup(json_string_value(text));
        res[i].score = json_is_number(score) ? json_number_value(score) : 0.0;
        res[i].pid = json_is_integer(pid) ? (uint64_t)json_integer_value(pid) : i;
        snprintf(idbuf, sizeof(idbuf), "%llu", (unsigned long long)res[i].pid);
        res[i].id = dspy_strdup(idbuf);
        if (!res[i].text || !res[i].id) {
            dspy_passages_free(res, n);
            rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
            goto out;
        }
    }
    *out = res;
    *nout = n;
out:
    json_decref(doc);
    return rc;
}

static dspy_status colbert_search(void *impl, const char *query, size_t k,
                                  struct dspy_passage **out, size_t *n, struct dspy_error *err)
{
    struct colbert *c = impl;
    struct dspy_buf url, body, req;
    char where[512], errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *headers = NULL;
    dspy_status rc = DSPY_OK;
    long status = 0;
    dspy_url_redact(c->url, where, sizeof(where));
    CURL *h = curl_easy_init();
    if (!h)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    dspy__buf_init(&url, 1 << 20);
    dspy__buf_init(&body, ANSWER_MAX);
    dspy__buf_init(&req, 1 << 20);
    if (c->post) {
        json_t *j = json_pack("{s:s, s:I}", "query", query, "k", (json_int_t)k);
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!s || dspy__buf_adds(&req, s)) {
            dspy_free(s);
            rc = dspy__err(err, DSPY_EINVAL, "the query is not UTF-8 or too long");
            goto out;
        }
        dspy_free(s);
        headers = curl_slist_append(NULL, "Content-Type: application/json; charset=utf-8");
        curl_easy_setopt(h, CURLOPT_URL, c->url);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, req.ptr);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)req.len);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    } else {
        char *q = curl_easy_escape(h, query, 0);
        if (!q || dspy__buf_addf(&url, "%s%squery=%s&k=%zu", c->url,
                                 strchr(c->url, '?') ? "&" : "?", q, k)) {
            curl_free(q);
            rc = dspy__err(err, DSPY_ETOOBIG, "the query is too long");
            goto out;
        }
        curl_free(q);
        curl_easy_setopt(h, CURLOPT_URL, url.ptr);
    }
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        rc = dspy__err(err, cc == CURLE_OPERATION_TIMEDOUT ? DSPY_ELM_TIMEOUT : DSPY_ELM_NETWORK,
                       "ColBERTv2 server %s: %s", where,
                       errbuf[0] ? errbuf : curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
        rc = dspy__err(err, status >= 500 ? DSPY_ELM_SERVER : DSPY_ELM_BAD_REQUEST,
                       "ColBERTv2 server %s answered HTTP %ld", where, status);
        if (err)
            err->http_status = (int)status;
        goto out;
    }
    rc = dspy__colbert_read_topk(where, body.ptr ? body.ptr : "", body.len, k, out, n, err);
out:
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    dspy__buf_release(&url);
    dspy__buf_release(&body);
    dspy__buf_release(&req);
    return rc;
}

static const struct dspy__retriever_ops colbert_ops = { "colbertv2",  colbert_search, NULL,
                                                        colbert_free, NULL,           NULL };

dspy_status dspy_retriever_colbert(const struct dspy_colbert_options *opts, dspy_retriever **out,
                                   struct dspy_error *err)
{
    if (!opts || !opts->url || !out)
        return dspy__err(err, DSPY_EINVAL, "dspy_retriever_colbert: a url is required");
    if (strncmp(opts->url, "http://", 7) && strncmp(opts->url, "https://", 8))
        return dspy__err(err, DSPY_EINVAL, "ColBERTv2 url must start with http:// or https://");
    struct colbert *c = dspy_calloc(1, sizeof(*c));
    if (!c || !(c->url = dspy_strdup(opts->url))) {
        colbert_free(c);
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    }
    c->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 10000;
    c->post = opts->post_requests;
    return dspy__retriever_wrap(&colbert_ops, c, out, err);
}
