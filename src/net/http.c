/* Blocking HTTP client (net layer): libcurl easy handles kept in a mutex-protected free
 * list per client, so each concurrent caller reuses a handle and its kept-alive connection. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "base/buf.h"
#include "base/status.h"
#include "net/http.h"

#define DEFAULT_MAX_RESPONSE ((size_t)16 << 20)

struct dspy__http_client {
    pthread_mutex_t lock;
    CURL **idle;      /* handles not in use; guarded by lock */
    size_t nidle;     /* guarded by lock */
    size_t max_idle;
};

struct dspy__http_headers {
    struct curl_slist *list;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;

static void global_init_once(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

dspy_status dspy__http_global_init(void)
{
    pthread_once(&global_once, global_init_once);
    return global_rc == CURLE_OK ? DSPY_OK : DSPY_ENOMEM;
}

struct dspy__http_client *dspy__http_client_new(size_t max_idle)
{
    if (dspy__http_global_init())
        return NULL;
    struct dspy__http_client *c = dspy_calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->max_idle = max_idle;
    c->idle = dspy_calloc(max_idle ? max_idle : 1, sizeof(CURL *));
    if (!c->idle)
        goto free_client;
    if (pthread_mutex_init(&c->lock, NULL))
        goto free_idle;
    return c;

free_idle:
    dspy_free(c->idle);
free_client:
    dspy_free(c);
    return NULL;
}

void dspy__http_client_free(struct dspy__http_client *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nidle; i++)
        curl_easy_cleanup(c->idle[i]);
    pthread_mutex_destroy(&c->lock);
    dspy_free(c->idle);
    dspy_free(c);
}

struct dspy__http_headers *dspy__http_headers_new(const char *const *lines, size_t n)
{
    struct dspy__http_headers *h = dspy_calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        struct curl_slist *next = curl_slist_append(h->list, lines[i]);
        if (!next) {
            dspy__http_headers_free(h);
            return NULL;
        }
        h->list = next;
    }
    return h;
}

void dspy__http_headers_free(struct dspy__http_headers *h)
{
    if (!h)
        return;
    curl_slist_free_all(h->list);
    dspy_free(h);
}

static CURL *take_handle(struct dspy__http_client *c)
{
    CURL *h = NULL;
    pthread_mutex_lock(&c->lock);
    if (c->nidle)
        h = c->idle[--c->nidle];
    pthread_mutex_unlock(&c->lock);
    if (h)
        curl_easy_reset(h); /* keeps the live connection and the DNS cache */
    else
        h = curl_easy_init();
    return h;
}

static void give_handle(struct dspy__http_client *c, CURL *h)
{
    pthread_mutex_lock(&c->lock);
    if (c->nidle < c->max_idle) {
        c->idle[c->nidle++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&c->lock);
    if (h)
        curl_easy_cleanup(h);
}

struct sink {
    struct dspy_buf buf;
    bool too_big;
    bool nomem;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct sink *s = userdata;
    size_t n = size * nmemb;
    dspy_status rc = dspy__buf_add(&s->buf, data, n);
    if (rc == DSPY_ETOOBIG)
        s->too_big = true;
    else if (rc)
        s->nomem = true;
    return rc ? 0 : n; /* a short count makes libcurl abort the transfer */
}

static dspy_status class_of(CURLcode cc)
{
    switch (cc) {
    case CURLE_OPERATION_TIMEDOUT: return DSPY_ELM_TIMEOUT;
    case CURLE_FILESIZE_EXCEEDED: return DSPY_ETOOBIG;
    case CURLE_OUT_OF_MEMORY: return DSPY_ENOMEM;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL: return DSPY_EINVAL;
    default: return DSPY_ELM_NETWORK;
    }
}

/* The URL without its path, query and any user:password part, for error messages. */
static void url_origin(const char *url, char *out, size_t cap)
{
    const char *p = strstr(url, "://");
    const char *host = p ? p + 3 : url;
    const char *end = host + strcspn(host, "/?#");
    const char *at = memchr(host, '@', (size_t)(end - host));
    if (at)
        host = at + 1;
    snprintf(out, cap, "%.*s%.*s", p ? (int)(p + 3 - url) : 0, url, (int)(end - host), host);
}

static dspy_status setup(CURL *h, const struct dspy__http_request *req, struct sink *s,
                         char *errbuf)
{
    CURLcode cc = CURLE_OK;
    /* Each setopt can only fail on allocation or a bad value; collect the first failure. */
#define SET(opt, val)                                                                          \
    do {                                                                                       \
        if (cc == CURLE_OK)                                                                    \
            cc = curl_easy_setopt(h, opt, val);                                                \
    } while (0)
    SET(CURLOPT_URL, req->url);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_ERRORBUFFER, errbuf);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, s);
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)s->buf.max);
    if (req->headers)
        SET(CURLOPT_HTTPHEADER, req->headers->list);
    if (req->body) {
        SET(CURLOPT_POST, 1L);
        SET(CURLOPT_POSTFIELDS, req->body);
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    if (req->timeout_s > 0)
        SET(CURLOPT_TIMEOUT_MS, (long)(req->timeout_s * 1000.0 + 0.5));
    if (req->connect_timeout_s > 0)
        SET(CURLOPT_CONNECTTIMEOUT_MS, (long)(req->connect_timeout_s * 1000.0 + 0.5));
#undef SET
    return cc == CURLE_OK ? DSPY_OK : class_of(cc);
}

dspy_status dspy__http_request(struct dspy__http_client *c, const struct dspy__http_request *req,
                               struct dspy__http_response *resp, struct dspy_error *err)
{
    char errbuf[CURL_ERROR_SIZE];
    char origin[256];
    struct sink s = { .too_big = false, .nomem = false };
    dspy_status rc;
    memset(resp, 0, sizeof(*resp));
    errbuf[0] = '\0';
    url_origin(req->url, origin, sizeof(origin));

    CURL *h = take_handle(c);
    if (!h)
        return dspy__err(err, DSPY_ENOMEM, "cannot create an HTTP handle");
    dspy__buf_init(&s.buf, req->max_response_bytes ? req->max_response_bytes
                                                   : DEFAULT_MAX_RESPONSE);
    if ((rc = setup(h, req, &s, errbuf))) {
        rc = dspy__err(err, rc, "cannot set up the request to %s", origin);
        goto drop_handle;
    }
    CURLcode cc = curl_easy_perform(h);
    if (s.too_big || cc == CURLE_FILESIZE_EXCEEDED) {
        rc = dspy__err(err, DSPY_ETOOBIG, "response from %s is larger than %zu bytes", origin,
                       s.buf.max);
        goto drop_handle;
    }
    if (s.nomem) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory reading the response from %s", origin);
        goto drop_handle;
    }
    if (cc != CURLE_OK) {
        rc = dspy__err(err, class_of(cc), "request to %s failed: %s", origin,
                       errbuf[0] ? errbuf : curl_easy_strerror(cc));
        goto drop_handle;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    if (!(resp->body = dspy__buf_detach(&s.buf, &resp->body_len))) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory reading the response from %s", origin);
        goto drop_handle;
    }
    give_handle(c, h);
    return DSPY_OK;

drop_handle:
    /* A handle whose transfer failed may hold a broken connection: do not pool it. */
    curl_easy_cleanup(h);
    dspy__buf_release(&s.buf);
    return rc;
}

void dspy__http_response_release(struct dspy__http_response *resp)
{
    if (!resp)
        return;
    dspy_free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
}
