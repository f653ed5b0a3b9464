/* One runner for every unit test group; exits non-zero when any test fails. */
#include <stdio.h>

#include "tests.h"

int main(void)
{
    int failed = 0;

    failed += run_token_tests();
    failed += run_json_tests();
    failed += run_decide_tests();
    failed += run_cors_tests();
    failed += run_body_tests();
    failed += run_crypto_tests();
    failed += run_keystore_tests();
    failed += run_mapguard_tests();
    failed += run_metrics_tests();
    failed += run_names_tests();
    failed += run_mirror_tests();
    failed += run_keycache_tests();
    if (failed != 0)
        fprintf(stderr, "unit tests: %d failed\n", failed);
    return failed == 0 ? 0 : 1;
}
