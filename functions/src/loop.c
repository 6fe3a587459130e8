/* loop: never returns; only the runtime's CPU bound can end it. */
#include "wagi.h"

int main(void) {
    volatile unsigned long spins = 0;
    for (;;) {
        spins++;
    }
}
