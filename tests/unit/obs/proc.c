/* Unit tests for process and machine sampling: this process's resident memory grows by what
 * it touches, CPU time grows with work done (CPU time, not wall time), another process is
 * sampled by pid and a gone one is reported, and the machine description agrees with what
 * the system says through other interfaces. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dspyc/proc.h>

#define MIB (1024ull * 1024ull)

static void self_memory_follows_touched_pages(void **state)
{
    (void)state;
    struct dspy_proc_sample before, after;
    assert_int_equal(dspy_proc_sample(0, &before), DSPY_OK);
    assert_true(before.rss_bytes > 0);
    assert_true(before.peak_rss_bytes >= before.rss_bytes);
    assert_true(before.taken_ns > 0);
    size_t n = 64 * MIB;
    volatile unsigned char *p = malloc(n);
    assert_non_null(p);
    for (size_t i = 0; i < n; i += 4096)
        p[i] = (unsigned char)i;
    assert_int_equal(dspy_proc_sample(0, &after), DSPY_OK);
    assert_true(after.rss_bytes >= before.rss_bytes + 48 * MIB);
    assert_true(after.peak_rss_bytes >= after.rss_bytes);
    assert_true(after.taken_ns >= before.taken_ns);
    free((void *)p);
}

static void self_cpu_time_grows_with_work(void **state)
{
    (void)state;
    struct dspy_proc_sample a, b;
    assert_int_equal(dspy_proc_sample(0, &a), DSPY_OK);
    /* spin until the kernel's CPU accounting (clock ticks) has moved, however slow the
     * machine: the test waits on the counter itself, not on a duration */
    volatile uint64_t x = 0;
    for (;;) {
        for (int i = 0; i < 1000000; i++)
            x += (uint64_t)i * 2654435761u;
        assert_int_equal(dspy_proc_sample(0, &b), DSPY_OK);
        if (b.cpu_user_ns + b.cpu_system_ns > a.cpu_user_ns + a.cpu_system_ns)
            break;
    }
    assert_true(b.cpu_user_ns >= a.cpu_user_ns);
    assert_true(b.cpu_system_ns >= a.cpu_system_ns);
}

static void other_process_by_pid(void **state)
{
    (void)state;
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        char c = 1;
        if (write(ready[1], &c, 1) != 1)
            _exit(1);
        pause();
        _exit(0);
    }
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    struct dspy_proc_sample s;
    assert_int_equal(dspy_proc_sample((int)child, &s), DSPY_OK);
    assert_true(s.rss_bytes > 0 && s.peak_rss_bytes >= s.rss_bytes);
    kill(child, SIGKILL);
    assert_int_equal(waitpid(child, NULL, 0), child);
    /* reaped: the pid names no process (until reused, which takes a full pid cycle) */
    assert_int_equal(dspy_proc_sample((int)child, &s), DSPY_ENOTFOUND);
    close(ready[0]);
    close(ready[1]);
}

static void machine_matches_the_system(void **state)
{
    (void)state;
    struct dspy_machine m;
    memset(&m, 0x7f, sizeof(m)); /* every field must be written */
    dspy_machine_describe(&m);
    assert_int_equal(m.cores, (int)sysconf(_SC_NPROCESSORS_ONLN));
    uint64_t mem = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
    assert_true(m.memory_bytes > mem / 2 && m.memory_bytes <= mem * 2);
    assert_non_null(memchr(m.cpu_model, '\0', sizeof(m.cpu_model)));
    assert_true(m.cpu_model[0] != '\0');
    assert_non_null(memchr(m.os, '\0', sizeof(m.os)));
    struct utsname u;
    assert_int_equal(uname(&u), 0);
    assert_non_null(strstr(m.os, u.sysname));
    assert_non_null(strstr(m.os, u.release));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(self_memory_follows_touched_pages),
        cmocka_unit_test(self_cpu_time_grows_with_work),
        cmocka_unit_test(other_process_by_pid),
        cmocka_unit_test(machine_matches_the_system),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
