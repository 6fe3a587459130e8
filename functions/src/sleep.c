/* sleep: waits `?ms=` milliseconds (default 100) in the host (WASI poll_oneoff); I/O-like latency. */
#include <time.h>

#include "wagi.h"

int main(void) {
    long ms = wagi_query_long("ms", 100, 0, 600000);
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    printf("Content-Type: text/plain\n\nslept %ld ms\n", ms);
    return 0;
}
