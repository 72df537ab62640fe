/* The LMs of the jobs a process runs (apps layer): one handle per model over the endpoint
 * flags, opened on first use and shared by every job, so one endpoint+model has one rate
 * limiter however many jobs call it. Used by `dspyc serve --jobs` and `dspyc worker`. */
#ifndef DSPYC_CLI_JOBS_LM_H
#define DSPYC_CLI_JOBS_LM_H

#include <pthread.h>

#include <dspyc/jobs.h>

#include "endpoint.h"

#define JOBS_LM_MAX 64

struct jobs_lm {
    pthread_mutex_t lock; /* guards everything below and the endpoint */
    struct endpoint *ep;
    const char *default_model; /* the endpoint's, once resolved */
    char *models[JOBS_LM_MAX];
    dspy_lm *lms[JOBS_LM_MAX];
    size_t n;
};

/* Open the default model's LM now (so bad flags fail at the start); false after printing
 * why. */
bool jobs_lm_init(struct jobs_lm *p, struct endpoint *ep);
/* dspy_job_lm_fn: the shared handle for `model` (NULL = the default). */
dspy_lm *jobs_lm_get(void *ud, const char *model);
/* dspy_jobq_pool_fn: the handles as a pool, and their calls now. */
void jobs_lm_pool(void *ud, struct dspy_jobq_pool *out);
/* Free the handles, then close the endpoint. */
void jobs_lm_release(struct jobs_lm *p);

#endif
