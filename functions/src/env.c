/*
 * env: prints what a function can see of its host: argv, the environment, and whether it
 * can open a file. Used to test the ABI's isolation (CGI variables only, no filesystem).
 */
#include <errno.h>

#include "wagi.h"

extern char **environ;

int main(int argc, char **argv) {
    fputs("Content-Type: text/plain\n\n", stdout);
    for (int i = 0; i < argc; i++) {
        printf("argv[%d]=%s\n", i, argv[i]);
    }
    for (char **env = environ; *env != NULL; env++) {
        printf("env %s\n", *env);
    }
    FILE *file = fopen("/etc/hostname", "r");
    printf("open /etc/hostname: %s\n", file == NULL ? strerror(errno) : "opened");
    if (file != NULL) {
        fclose(file);
    }
    return 0;
}
