/* Process and machine sampling: resident memory, peak memory and CPU time of this process
 * or another one by pid (Linux /proc), and a description of the machine for reports. */
#ifndef DSPYC_PROC_H
#define DSPYC_PROC_H

#include <dspyc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

struct dspy_proc_sample {
    uint64_t rss_bytes;      /* resident set size now */
    uint64_t peak_rss_bytes; /* high-water mark of the resident set (VmHWM) */
    uint64_t cpu_user_ns;    /* user CPU time consumed so far */
    uint64_t cpu_system_ns;  /* system CPU time consumed so far */
    uint64_t taken_ns;       /* dspy_clock_ns() when sampled */
};

/** Sample process `pid` (0 = this process). DSPY_ENOTFOUND when it does not exist,
 * DSPY_EIO when /proc cannot be read. Thread-safe. */
DSPY_EXTERN dspy_status dspy_proc_sample(int pid, struct dspy_proc_sample *out);

struct dspy_machine {
    int cores;           /* online CPUs */
    char cpu_model[128]; /* "model name" from /proc/cpuinfo, or "unknown" */
    uint64_t memory_bytes;
    char os[64]; /* kernel name and release */
};
/** Describe this machine. Never fails; unknown parts say "unknown" or 0. */
DSPY_EXTERN void dspy_machine_describe(struct dspy_machine *out);

#ifdef __cplusplus
}
#endif
#endif
