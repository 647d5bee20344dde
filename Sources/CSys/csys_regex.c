#include "csys_regex.h"

#include <regex.h>
#include <stdlib.h>

void *csys_regex_compile(const char *pattern, int *code, char *message, size_t capacity) {
    regex_t *compiled = malloc(sizeof(regex_t));
    if (compiled == NULL) {
        *code = REG_ESPACE;
        if (capacity > 0) message[0] = 0;
        return NULL;
    }
    int rc = regcomp(compiled, pattern, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        *code = rc;
        if (capacity > 0) regerror(rc, compiled, message, capacity);
        free(compiled);
        return NULL;
    }
    *code = 0;
    return compiled;
}

int csys_regex_matches(const void *compiled, const char *text) {
    return regexec((const regex_t *)compiled, text, 0, NULL, 0) == 0 ? 1 : 0;
}

void csys_regex_free(void *compiled) {
    if (compiled == NULL) return;
    regfree((regex_t *)compiled);
    free(compiled);
}
