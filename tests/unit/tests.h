/* The unit test groups; each returns the number of failed tests (cmocka_run_group_tests). */
#ifndef KA_UNIT_TESTS_H
#define KA_UNIT_TESTS_H

/* cmocka needs these before <cmocka.h>. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

int run_token_tests(void);
int run_json_tests(void);
int run_decide_tests(void);
int run_cors_tests(void);
int run_body_tests(void);
int run_crypto_tests(void);
int run_keystore_tests(void);
int run_mapguard_tests(void);
int run_metrics_tests(void);
int run_names_tests(void);
int run_mirror_tests(void);
int run_keycache_tests(void);

#endif
