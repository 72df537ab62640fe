/* Process and machine sampling from Linux /proc (obs layer). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <dspyc/proc.h>

/* "VmRSS:   1234 kB" lines of /proc/PID/status. */
static uint64_t status_kb(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    if (!p)
        return 0;
    return strtoull(p + strlen(key), NULL, 10) * 1024u;
}

static dspy_status read_small_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return DSPY_ENOTFOUND;
    size_t n = fread(buf, 1, cap - 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad)
        return DSPY_EIO;
    buf[n] = '\0';
    return DSPY_OK;
}

dspy_status dspy_proc_sample(int pid, struct dspy_proc_sample *out)
{
    char path[64], buf[4096];
    dspy_status rc;
    memset(out, 0, sizeof(*out));
    out->taken_ns = dspy_clock_ns();
    if (pid)
        snprintf(path, sizeof(path), "/proc/%d/status", pid);
    else
        snprintf(path, sizeof(path), "/proc/self/status");
    if ((rc = read_small_file(path, buf, sizeof(buf))))
        return rc;
    out->rss_bytes = status_kb(buf, "VmRSS:");
    out->peak_rss_bytes = status_kb(buf, "VmHWM:");

    if (pid)
        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    else
        snprintf(path, sizeof(path), "/proc/self/stat");
    if ((rc = read_small_file(path, buf, sizeof(buf))))
        return rc;
    /* Fields after the parenthesised command name; utime and stime are the 12th and 13th. */
    const char *p = strrchr(buf, ')');
    if (!p)
        return DSPY_EIO;
    unsigned long long utime = 0, stime = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return DSPY_EIO;
    long hz = sysconf(_SC_CLK_TCK);
    if (hz <= 0)
        hz = 100;
    out->cpu_user_ns = (uint64_t)(utime * (1000000000ull / (unsigned long long)hz));
    out->cpu_system_ns = (uint64_t)(stime * (1000000000ull / (unsigned long long)hz));
    return DSPY_OK;
}

void dspy_machine_describe(struct dspy_machine *out)
{
    char buf[8192];
    memset(out, 0, sizeof(*out));
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    out->cores = n > 0 ? (int)n : 0;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0)
        out->memory_bytes = (uint64_t)pages * (uint64_t)page;
    snprintf(out->cpu_model, sizeof(out->cpu_model), "unknown");
    if (read_small_file("/proc/cpuinfo", buf, sizeof(buf)) == DSPY_OK) {
        const char *p = strstr(buf, "model name");
        if (p && (p = strchr(p, ':'))) {
            p += 1 + strspn(p + 1, " \t");
            size_t len = strcspn(p, "\n");
            snprintf(out->cpu_model, sizeof(out->cpu_model), "%.*s", (int)len, p);
        }
    }
    struct utsname u;
    if (uname(&u) == 0)
        snprintf(out->os, sizeof(out->os), "%.20s %.40s", u.sysname, u.release);
    else
        snprintf(out->os, sizeof(out->os), "unknown");
}
