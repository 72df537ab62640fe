/* One LM handle per model for the jobs of this process (apps layer); see jobs_lm.h. */
#include <stdlib.h>
#include <string.h>

#include "jobs_lm.h"

bool jobs_lm_init(struct jobs_lm *p, struct endpoint *ep)
{
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->lock, NULL);
    p->ep = ep;
    dspy_lm *lm = endpoint_open(ep);
    if (!lm)
        return false;
    p->default_model = ep->model;
    p->models[0] = strdup(ep->model);
    if (!p->models[0])
        abort();
    p->lms[0] = lm;
    p->n = 1;
    return true;
}

dspy_lm *jobs_lm_get(void *ud, const char *model)
{
    struct jobs_lm *p = ud;
    dspy_lm *lm = NULL;
    pthread_mutex_lock(&p->lock);
    if (!model)
        model = p->default_model;
    for (size_t i = 0; i < p->n && !lm; i++)
        if (!strcmp(p->models[i], model))
            lm = p->lms[i];
    if (!lm && p->n < JOBS_LM_MAX) {
        p->ep->model = model;
        if ((lm = endpoint_open(p->ep))) {
            p->models[p->n] = strdup(model);
            if (!p->models[p->n])
                abort();
            p->lms[p->n++] = lm;
        }
        p->ep->model = p->default_model;
    }
    pthread_mutex_unlock(&p->lock);
    return lm;
}

void jobs_lm_pool(void *ud, struct dspy_jobq_pool *out)
{
    struct jobs_lm *p = ud;
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&p->lock);
    out->handles = p->n;
    out->max_handles = JOBS_LM_MAX;
    for (size_t i = 0; i < p->n; i++) {
        struct dspy_lm_stats st;
        dspy_lm_get_stats(p->lms[i], &st);
        out->in_flight += st.in_flight;
        out->waiting += st.pending > st.in_flight ? st.pending - st.in_flight : 0;
        out->requests += st.requests;
    }
    pthread_mutex_unlock(&p->lock);
}

void jobs_lm_release(struct jobs_lm *p)
{
    for (size_t i = 1; i < p->n; i++) {
        dspy_lm_free(p->lms[i]);
        free(p->models[i]);
    }
    endpoint_close(p->ep, p->n ? p->lms[0] : NULL);
    if (p->n)
        free(p->models[0]);
    p->n = 0;
    pthread_mutex_destroy(&p->lock);
}
