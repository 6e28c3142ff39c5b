/* Callgrind's client requests for bench/instructions (loaded with ctypes by runner.py).
 * Outside Valgrind each request is a few no-op instructions. */
#include <valgrind/callgrind.h>

int ot_on_valgrind(void) { return RUNNING_ON_VALGRIND; }
void ot_instrument(int on) {
    if (on) { CALLGRIND_START_INSTRUMENTATION; } else { CALLGRIND_STOP_INSTRUMENTATION; }
}
/* zero the counters and start collecting: the measured calls follow */
void ot_begin(void) { CALLGRIND_ZERO_STATS; CALLGRIND_TOGGLE_COLLECT; }
/* stop collecting and write what was counted since ot_begin to a dump named `name` */
void ot_end(const char *name) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS_AT(name); }
