/* Asynchronous LM calls (lm layer): dspy_lm_submit() (and dspy__lm_submit_call(), its form
 * for the pre-encoded requests of modules) encodes the request on the caller's thread, hands the body to the handle's engine and reads the answer in the engine's
 * completion callback, on the loop thread: no thread waits per call. Handles with a cache
 * or a transport hook run the call synchronously instead (the cache's single-flight and the
 * hook both block). */
#include <string.h>

#include <dspyc/lm.h>

#include "base/buf.h"
#include "base/status.h"
#include "lm/lm_handle.h"

struct async_call {
    dspy_lm *lm;
    dspy_lm_done_fn on_done;
    void *userdata;
};

static void async_done(struct dspy__engine_call *call, const struct dspy__engine_result *res,
                       void *userdata)
{
    struct async_call *a = userdata;
    struct dspy_lm_response resp;
    struct dspy_error err;
    dspy_error_clear(&err);
    dspy_status rc = dspy__lm_read_result(a->lm, call, res, &resp, NULL, NULL, &err);
    a->on_done(a->userdata, rc, &resp, &err);
    dspy_free(a);
}

/* The blocking path, for handles whose calls cannot leave the caller's thread. */
static dspy_status run_here(dspy_lm *lm, const struct dspy__lm_call *call, dspy_lm_done_fn on_done,
                            void *userdata)
{
    struct dspy_lm_response resp;
    struct dspy_error err;
    dspy_error_clear(&err);
    dspy_status rc = dspy__lm_complete_call(lm, call, &resp, &err);
    on_done(userdata, rc, &resp, &err);
    return DSPY_OK;
}

dspy_status dspy__lm_submit_call(dspy_lm *lm, const struct dspy__lm_call *call,
                                 dspy_lm_done_fn on_done, void *userdata, struct dspy_error *err)
{
    struct dspy_buf body;
    struct dspy__lm_body_marks marks;
    struct async_call *a = NULL;
    dspy_status rc;
    if (lm->transport || lm->cache)
        return run_here(lm, call, on_done, userdata);
    dspy__buf_init(&body, DSPY__LM_MAX_BODY);
    if ((rc = dspy__lm_encode_body(lm, call, &body, &marks))) {
        rc = rc == DSPY_ETOOBIG
                 ? dspy__err(err, rc, "LM request body is larger than %zu bytes", DSPY__LM_MAX_BODY)
                 : dspy__err(err, rc, "cannot encode the LM request: %s", dspy_strerror(rc));
        goto release;
    }
    if (!(a = dspy_malloc(sizeof(*a)))) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto release;
    }
    a->lm = lm;
    a->on_done = on_done;
    a->userdata = userdata;
    size_t len = body.len;
    char *owned = dspy__buf_detach(&body, NULL);
    if ((rc = dspy__lm_submit_body(lm, call->group, owned, len, true, async_done, a, NULL, err))) {
        dspy_free(owned); /* the engine took nothing */
        dspy_free(a);
    }

release:
    dspy__buf_release(&body);
    return rc;
}

dspy_status dspy_lm_submit(dspy_lm *lm, const struct dspy_lm_request *req, dspy_lm_done_fn on_done,
                           void *userdata, struct dspy_error *err)
{
    struct dspy_buf msgs, rf;
    struct dspy__lm_call call;
    dspy_status rc;
    if (!lm || !req || !on_done || !json_is_array(req->messages))
        return dspy__err(err, DSPY_EINVAL,
                         "dspy_lm_submit: lm, a messages array and on_done are required");
    dspy__buf_init(&msgs, DSPY__LM_MAX_BODY);
    dspy__buf_init(&rf, DSPY__LM_MAX_BODY);
    if (!(rc = dspy__lm_call_from_request(req, &msgs, &rf, &call, err)))
        rc = dspy__lm_submit_call(lm, &call, on_done, userdata, err);
    dspy__buf_release(&rf);
    dspy__buf_release(&msgs);
    return rc;
}
