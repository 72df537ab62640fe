/* Answers of the HTTP server (net layer): whole bodies, bodies cut short, drops, chunked
 * streams paced by per-chunk due times, and OpenAI-style JSON errors. Any thread may answer;
 * the MHD thread picks the answer up in advance() (server.c) or in the stream reader here. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/clock.h"
#include "net/server_int.h"

#define READ_BLOCK (32 * 1024)

/* ---- Streams ---- */

/* req->lock held. */
static dspy_status push_locked(struct dspy__srv_req *req, const void *data, size_t len,
                               uint64_t due)
{
    if (req->nmarks == req->mcap) {
        size_t cap = req->mcap ? req->mcap * 2 : 16;
        struct dspy__srv_mark *m = dspy_realloc(req->marks, cap * sizeof(*m));
        if (!m)
            return DSPY_ENOMEM;
        req->marks = m;
        req->mcap = cap;
    }
    dspy_status rc = dspy__buf_add(&req->sbuf, data, len);
    if (rc)
        return rc;
    /* Chunks keep their order, so a chunk is never due before the one ahead of it. */
    if (req->nmarks && req->marks[req->nmarks - 1].due > due)
        due = req->marks[req->nmarks - 1].due;
    req->marks[req->nmarks++] = (struct dspy__srv_mark){ req->sbuf.len, due };
    return DSPY_OK;
}

/* MHD content reader for streams and truncated bodies; MHD thread. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct dspy__srv_req *req = cls;
    ssize_t n;
    (void)pos;

    pthread_mutex_lock(&req->lock);
    if (atomic_load(&req->srv->stopping)) {
        n = MHD_CONTENT_READER_END_WITH_ERROR;
        goto out;
    }
    uint64_t now = dspy__now_ns();
    uint64_t held = dspy__srv_gate(req, 0);
    if (held > now) {
        n = dspy__srv_park(req, held) ? 0 : MHD_CONTENT_READER_END_WITH_ERROR;
        goto out;
    }
    while (req->mhead < req->nmarks && req->marks[req->mhead].due <= now)
        req->sready = req->marks[req->mhead++].end;
    if (req->soff < req->sready) {
        size_t k = req->sready - req->soff;
        if (k > max)
            k = max;
        memcpy(buf, req->sbuf.ptr + req->soff, k);
        req->soff += k;
        if (req->soff == req->sbuf.len && req->mhead == req->nmarks) {
            dspy__buf_reset(&req->sbuf);
            req->soff = req->sready = 0;
            req->nmarks = req->mhead = 0;
        }
        n = (ssize_t)k;
        goto out;
    }
    if (req->mhead == req->nmarks && req->s_ended && req->s_end_due <= now) {
        n = req->s_abort ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
        goto out;
    }
    uint64_t next = req->mhead < req->nmarks ? req->marks[req->mhead].due
                    : req->s_ended           ? req->s_end_due
                                             : 0;
    n = dspy__srv_park(req, next) ? 0 : MHD_CONTENT_READER_END_WITH_ERROR;
out:
    pthread_mutex_unlock(&req->lock);
    return n;
}

/* ---- Answers ---- */

static dspy_status add_headers(struct MHD_Response *resp, const struct dspy__srv_reply *r)
{
    if (r->content_type &&
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type) != MHD_YES)
        return DSPY_ENOMEM;
    for (const char *const *h = r->headers; h && h[0] && h[1]; h += 2)
        if (MHD_add_response_header(resp, h[0], h[1]) != MHD_YES)
            return DSPY_EINVAL;
    return DSPY_OK;
}

/* Hand an answer to the request; consumes resp. Wakes a request that waits for it. */
static dspy_status set_action(struct dspy__srv_req *req, enum dspy__srv_action a, int status,
                              struct MHD_Response *resp, uint64_t due)
{
    dspy_status rc = DSPY_OK;
    pthread_mutex_lock(&req->lock);
    if (atomic_load(&req->closed))
        rc = DSPY_ECANCELED;
    else if (req->action != DSPY__ACT_NONE)
        rc = DSPY_EINVAL;
    if (rc == DSPY_OK) {
        req->action = a;
        req->status = status;
        req->resp = resp;
        req->due = due;
        resp = NULL;
        dspy__srv_wake(req);
    }
    pthread_mutex_unlock(&req->lock);
    if (resp)
        MHD_destroy_response(resp);
    return rc;
}

dspy_status dspy__srv_send(struct dspy__srv_req *req, const struct dspy__srv_reply *r,
                           uint64_t due_ns)
{
    struct MHD_Response *resp;
    if (r->body_free)
        resp = MHD_create_response_from_buffer_with_free_callback(r->len, (void *)r->body,
                                                                  r->body_free);
    else
        resp = MHD_create_response_from_buffer(r->len, (void *)r->body, MHD_RESPMEM_MUST_COPY);
    if (!resp) {
        if (r->body_free)
            r->body_free((void *)r->body);
        return DSPY_ENOMEM;
    }
    dspy_status rc = add_headers(resp, r);
    if (rc) {
        MHD_destroy_response(resp);
        return rc;
    }
    return set_action(req, DSPY__ACT_SEND, r->status, resp, due_ns);
}

dspy_status dspy__srv_drop(struct dspy__srv_req *req, uint64_t due_ns)
{
    return set_action(req, DSPY__ACT_DROP, 0, NULL, due_ns);
}

static dspy_status stream_setup(struct dspy__srv_req *req, const struct dspy__srv_reply *r,
                                uint64_t size, uint64_t due, const void *keep, size_t keep_len)
{
    dspy_status rc;
    struct MHD_Response *resp = MHD_create_response_from_callback(size, READ_BLOCK, stream_read,
                                                                  req, NULL);
    if (!resp)
        return DSPY_ENOMEM;
    if ((rc = add_headers(resp, r)))
        goto fail;
    pthread_mutex_lock(&req->lock);
    if (atomic_load(&req->closed))
        rc = DSPY_ECANCELED;
    else if (req->action != DSPY__ACT_NONE)
        rc = DSPY_EINVAL;
    else if (keep && (rc = push_locked(req, keep, keep_len, due)) == DSPY_OK) {
        req->s_ended = req->s_abort = true;
        req->s_end_due = due;
    }
    if (rc == DSPY_OK) {
        req->action = DSPY__ACT_STREAM;
        req->status = r->status;
        req->resp = resp;
        req->due = due;
        resp = NULL;
        dspy__srv_wake(req);
    }
    pthread_mutex_unlock(&req->lock);
fail:
    if (resp)
        MHD_destroy_response(resp);
    return rc;
}

dspy_status dspy__srv_stream_start(struct dspy__srv_req *req, const struct dspy__srv_reply *r,
                                   uint64_t due_ns)
{
    return stream_setup(req, r, MHD_SIZE_UNKNOWN, due_ns, NULL, 0);
}

dspy_status dspy__srv_send_truncated(struct dspy__srv_req *req, const struct dspy__srv_reply *r,
                                     uint64_t due_ns, size_t keep)
{
    if (keep > r->len)
        keep = r->len;
    /* An empty push still has to end the body, so push at least a zero-length mark. */
    dspy_status rc = stream_setup(req, r, r->len, due_ns, r->body ? r->body : "", keep);
    if (r->body_free)
        r->body_free((void *)r->body);
    return rc;
}

dspy_status dspy__srv_stream_push(struct dspy__srv_req *req, const void *data, size_t len,
                                  uint64_t due_ns)
{
    dspy_status rc;
    pthread_mutex_lock(&req->lock);
    if (atomic_load(&req->closed))
        rc = DSPY_ECANCELED;
    else if (req->action != DSPY__ACT_STREAM || req->s_ended)
        rc = DSPY_EINVAL;
    else if ((rc = push_locked(req, data, len, due_ns)) == DSPY_OK &&
             (req->park_due == 0 || due_ns < req->park_due))
        dspy__srv_wake(req);
    pthread_mutex_unlock(&req->lock);
    return rc;
}

dspy_status dspy__srv_stream_end(struct dspy__srv_req *req, uint64_t due_ns, bool abort)
{
    dspy_status rc = DSPY_OK;
    pthread_mutex_lock(&req->lock);
    if (atomic_load(&req->closed))
        rc = DSPY_ECANCELED;
    else if (req->action != DSPY__ACT_STREAM || req->s_ended)
        rc = DSPY_EINVAL;
    else {
        if (req->nmarks && req->marks[req->nmarks - 1].due > due_ns)
            due_ns = req->marks[req->nmarks - 1].due;
        req->s_ended = true;
        req->s_abort = abort;
        req->s_end_due = due_ns;
        if (req->park_due == 0 || due_ns < req->park_due)
            dspy__srv_wake(req);
    }
    pthread_mutex_unlock(&req->lock);
    return rc;
}

/* Error text goes into JSON; keep it printable ASCII so any echoed input stays valid. */
static void sanitize(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
            *s = '?';
}

dspy_status dspy__srv_send_error(struct dspy__srv_req *req, int status, const char *type,
                                 const char *param, const char *code, const char *const *headers,
                                 const char *fmt, ...)
{
    char msg[512];
    struct dspy_buf b;
    dspy_status rc;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sanitize(msg);
    dspy__buf_init(&b, 4096);
    rc = dspy__buf_adds(&b, "{\"error\":{\"message\":");
    if (!rc)
        rc = dspy__buf_add_json_str(&b, msg, strlen(msg));
    if (!rc)
        rc = dspy__buf_adds(&b, ",\"type\":");
    if (!rc)
        rc = dspy__buf_add_json_str(&b, type, strlen(type));
    if (!rc)
        rc = dspy__buf_adds(&b, ",\"param\":");
    if (!rc)
        rc = param ? dspy__buf_add_json_str(&b, param, strlen(param)) : dspy__buf_adds(&b, "null");
    if (!rc)
        rc = dspy__buf_adds(&b, ",\"code\":");
    if (!rc)
        rc = code ? dspy__buf_add_json_str(&b, code, strlen(code)) : dspy__buf_adds(&b, "null");
    if (!rc)
        rc = dspy__buf_adds(&b, "}}\n");
    if (!rc) {
        struct dspy__srv_reply r = { status, "application/json", headers, b.ptr, b.len, NULL };
        rc = dspy__srv_send(req, &r, 0);
    }
    dspy__buf_release(&b);
    return rc;
}
