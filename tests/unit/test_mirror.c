/* mirror_apply.c and kms.c: what each Krenalis notification does to a store (SPEC §11.1), in a
 * temporary store; the pepper's AES-256-GCM decryption and the base64 of Krenalis []byte. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "keystore.h"
#include "kms.h"
#include "mirror_apply.h"
#include "tests.h"
#include "tmpdir.h"
#include "token.h"

#define ORG "orgM23456789"
#define WS "wsM123456789"
#define WS2 "wsM223456789"
#define CONN "cnM123456789"
#define KEY_ID "kyM123456789"
#define WKEY "WriteKeyOfMirrorTestsxxxxxxxxxxx"

static char root[64], dir[128];
static ka_store *st;

/* A write transaction (asserted). */
static ka_store_txn *wr(void)
{
    char err[512];
    ka_store_txn *txn = NULL;

    assert_int_equal(ka_store_write_begin(st, &txn, err, sizeof(err)), KA_OK);
    return txn;
}

static void commit(ka_store_txn *txn)
{
    char err[512];
    assert_int_equal(ka_store_commit(txn, err, sizeof(err)), KA_OK);
}

static int setup(void **state)
{
    char err[512];

    (void)state;
    if (ka_test_tmpdir(root, sizeof(root), "mirror") != 0)
        return -1;
    snprintf(dir, sizeof(dir), "%s/store", root);
    if (ka_store_create(dir, NULL, err, sizeof(err)) != KA_OK ||
        ka_store_open(dir, NULL, 0, &st, err, sizeof(err)) != KA_OK) {
        fprintf(stderr, "store: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ka_store_close(st);
    st = NULL;
    return ka_test_rmtree(root);
}

/* Applies one notification in a transaction of its own; returns what ka_mirror_apply did. */
static int apply(const char *name, const char *payload)
{
    char err[512] = "";
    ka_store_txn *txn;
    int rc;

    txn = wr();
    rc = ka_mirror_apply(txn, st, name, payload, payload ? strlen(payload) : 0, 1700000000, err,
                         sizeof(err));
    if (rc == KA_OK)
        commit(txn);
    else {
        ka_store_abort(txn);
        assert_non_null(strstr(err, name));
        /* The message names the notification, never its payload. */
        assert_null(strstr(err, "{"));
    }
    return rc;
}

static void ok(const char *name, const char *payload)
{
    assert_int_equal(apply(name, payload), KA_OK);
}

static ka_store_txn *rd(void)
{
    char err[512];
    ka_store_txn *txn = NULL;

    assert_int_equal(ka_store_read_begin(st, &txn, err, sizeof(err)), KA_OK);
    return txn;
}

static int get_org(const char *id, ka_entity *e)
{
    ka_store_txn *t = rd();
    int rc = ka_get_org(t, st, id, e);
    ka_store_abort(t);
    return rc;
}

static int get_conn(const char *id, ka_entity *e)
{
    ka_store_txn *t = rd();
    int rc = ka_get_conn(t, st, id, e);
    ka_store_abort(t);
    return rc;
}

static int get_ws(const char *id, ka_entity *e)
{
    ka_store_txn *t = rd();
    int rc = ka_get_ws(t, st, id, e);
    ka_store_abort(t);
    return rc;
}

static int get_write(const char *key, ka_key_rec *r)
{
    uint8_t d[KA_DIGEST_LEN];
    ka_store_txn *t = rd();
    int rc;

    ka_digest_write(st, key, d);
    rc = ka_get_key(t, st, d, r);
    if (rc == KA_OK) /* name, hint and time are in the key-ids record */
        rc = ka_get_key_by_id(t, st, r->id, r);
    ka_store_abort(t);
    return rc;
}

static int get_api(const uint8_t digest[KA_DIGEST_LEN], ka_key_rec *r)
{
    ka_store_txn *t = rd();
    int rc = ka_get_key(t, st, digest, r);
    if (rc == KA_OK) /* name, hint and time are in the key-ids record */
        rc = ka_get_key_by_id(t, st, r->id, r);
    ka_store_abort(t);
    return rc;
}

static void base_fixture(void)
{
    ok("CreateOrganization", "{\"ID\":\"" ORG "\",\"Name\":\"Acme\",\"Enabled\":true}");
    ok("CreateWorkspace", "{\"ID\":\"" WS "\",\"Organization\":\"" ORG "\",\"Name\":\"Web\"}");
    ok("CreateWorkspace", "{\"ID\":\"" WS2 "\",\"Organization\":\"" ORG "\",\"Name\":\"App\"}");
    ok("CreateConnection", "{\"ID\":\"" CONN "\",\"Workspace\":\"" WS "\",\"Name\":\"site\","
                           "\"Role\":1,\"Strategy\":\"Fusion\",\"EventWriteKey\":\"" WKEY "\","
                           "\"Settings\":\"secret\"}");
}

static void test_organizations(void **state)
{
    ka_entity e;

    (void)state;
    base_fixture();
    assert_int_equal(get_org(ORG, &e), KA_OK);
    assert_int_equal(e.enabled, 1);
    assert_string_equal(e.name, "Acme");
    ok("SetOrganizationStatus", "{\"ID\":\"" ORG "\",\"Enabled\":false}");
    assert_int_equal(get_org(ORG, &e), KA_OK);
    assert_int_equal(e.enabled, 0);
    ok("UpdateOrganization", "{\"ID\":\"" ORG "\",\"Name\":\"Acme 2\"}");
    assert_int_equal(get_org(ORG, &e), KA_OK);
    assert_string_equal(e.name, "Acme 2");
    assert_int_equal(e.enabled, 0);
    /* Unknown IDs change nothing. */
    ok("SetOrganizationStatus", "{\"ID\":\"orgZ23456789\",\"Enabled\":true}");
    assert_int_equal(get_org("orgZ23456789", &e), KA_NOTFOUND);
    ok("DeleteOrganization", "{\"ID\":\"" ORG "\"}");
    assert_int_equal(get_org(ORG, &e), KA_NOTFOUND);
    assert_int_equal(get_ws(WS, &e), KA_NOTFOUND);
    assert_int_equal(get_conn(CONN, &e), KA_NOTFOUND);
}

static void test_connections(void **state)
{
    ka_entity e;
    ka_key_rec r;

    (void)state;
    base_fixture();
    assert_int_equal(get_conn(CONN, &e), KA_OK);
    assert_int_equal(e.conn_flags, 0);
    assert_string_equal(e.org, ORG);
    assert_int_equal(get_write(WKEY, &r), KA_OK);
    assert_int_equal(r.type, KA_KEY_WRITE);
    assert_string_equal(r.conn, CONN);
    assert_string_equal(r.ws, WS);
    assert_string_equal(r.hint, "Writ...xxxxxx");
    assert_true(ka_id_valid(r.id, strlen(r.id)));
    ok("UpdateConnection", "{\"Connection\":\"" CONN "\",\"Name\":\"n\",\"Strategy\":null}");
    assert_int_equal(get_conn(CONN, &e), KA_OK);
    assert_int_equal(e.conn_flags, KA_CONN_NO_STRATEGY);
    assert_string_equal(e.name, "n");
    ok("RenameConnection", "{\"Connection\":\"" CONN "\",\"Name\":\"m\"}");
    assert_int_equal(get_conn(CONN, &e), KA_OK);
    assert_int_equal(e.conn_flags, KA_CONN_NO_STRATEGY);
    assert_string_equal(e.name, "m");
    /* A destination connection, no write key. */
    ok("CreateConnection", "{\"ID\":\"cnD123456789\",\"Workspace\":\"" WS "\",\"Name\":\"wh\","
                           "\"Role\":2,\"Strategy\":null,\"EventWriteKey\":\"\"}");
    assert_int_equal(get_conn("cnD123456789", &e), KA_OK);
    assert_int_equal(e.conn_flags, KA_CONN_DESTINATION | KA_CONN_NO_STRATEGY);
    ok("UpdateConnection",
       "{\"Connection\":\"cnD123456789\",\"Name\":\"wh\",\"Strategy\":\"Isolation\"}");
    assert_int_equal(get_conn("cnD123456789", &e), KA_OK);
    assert_int_equal(e.conn_flags, KA_CONN_DESTINATION);
    /* Write keys: one of another connection is not removed. */
    ok("CreateEventWriteKey",
       "{\"Connection\":\"" CONN "\",\"Key\":\"AnotherWriteKeyxxxxxxxxxxxxxxxxx\"}");
    ok("DeleteEventWriteKey", "{\"Connection\":\"cnD123456789\",\"Key\":\"" WKEY "\"}");
    assert_int_equal(get_write(WKEY, &r), KA_OK);
    ok("DeleteEventWriteKey", "{\"Connection\":\"" CONN "\",\"Key\":\"" WKEY "\"}");
    assert_int_equal(get_write(WKEY, &r), KA_NOTFOUND);
    assert_int_equal(get_write("AnotherWriteKeyxxxxxxxxxxxxxxxxx", &r), KA_OK);
    ok("DeleteConnection", "{\"ID\":\"" CONN "\"}");
    assert_int_equal(get_conn(CONN, &e), KA_NOTFOUND);
    assert_int_equal(get_write("AnotherWriteKeyxxxxxxxxxxxxxxxxx", &r), KA_NOTFOUND);
}

static void test_access_keys(void **state)
{
    /* HMAC of 32 bytes 0x01..0x20 under a pepper: what access_keys.hmac holds. The mirror
     * stores it as the digest; the store's own HMAC of the payload must find it. */
    uint8_t payload[KA_PAYLOAD_LEN], digest[KA_DIGEST_LEN];
    char b64[64], json[512];
    ka_key_rec r;

    (void)state;
    base_fixture();
    for (int i = 0; i < KA_PAYLOAD_LEN; i++)
        payload[i] = (uint8_t)(i + 1);
    ka_digest_api(st, payload, digest);
    EVP_EncodeBlock((unsigned char *)b64, digest, KA_DIGEST_LEN);
    snprintf(json, sizeof(json),
             "{\"ID\":\"" KEY_ID "\",\"Organization\":\"" ORG "\",\"Workspace\":\"" WS "\","
             "\"Type\":1,\"HMAC\":\"%s\"}",
             b64);
    ok("CreateAccessKey", json); /* MCP: not kept */
    assert_int_equal(get_api(digest, &r), KA_NOTFOUND);
    snprintf(json, sizeof(json),
             "{\"ID\":\"" KEY_ID "\",\"Organization\":\"" ORG "\",\"Workspace\":\"" WS "\","
             "\"Type\":0,\"HMAC\":\"%s\"}",
             b64);
    ok("CreateAccessKey", json);
    assert_int_equal(get_api(digest, &r), KA_OK);
    assert_int_equal(r.type, KA_KEY_API);
    assert_string_equal(r.id, KEY_ID);
    assert_string_equal(r.ws, WS);
    ok("DeleteAccessKey", "{\"ID\":\"kyZ123456789\"}");
    assert_int_equal(get_api(digest, &r), KA_OK);
    ok("DeleteAccessKey", "{\"ID\":\"" KEY_ID "\"}");
    assert_int_equal(get_api(digest, &r), KA_NOTFOUND);
    /* Unrestricted; removed with its organization, not with a workspace. */
    snprintf(json, sizeof(json),
             "{\"ID\":\"" KEY_ID "\",\"Organization\":\"" ORG "\",\"Workspace\":\"\","
             "\"Type\":0,\"HMAC\":\"%s\"}",
             b64);
    ok("CreateAccessKey", json);
    ok("DeleteWorkspace", "{\"ID\":\"" WS "\"}");
    assert_int_equal(get_api(digest, &r), KA_OK);
    assert_string_equal(r.ws, "");
    ok("DeleteOrganization", "{\"ID\":\"" ORG "\"}");
    assert_int_equal(get_api(digest, &r), KA_NOTFOUND);
}

static void test_bad_payloads(void **state)
{
    ka_entity e;

    (void)state;
    base_fixture();
    assert_int_equal(apply("CreateOrganization", "not json"), KA_FAIL);
    assert_int_equal(apply("CreateOrganization", "[1]"), KA_FAIL);
    assert_int_equal(apply("CreateOrganization", NULL), KA_FAIL);
    assert_int_equal(
        apply("CreateOrganization", "{\"ID\":\"short\",\"Name\":\"x\",\"Enabled\":true}"), KA_FAIL);
    assert_int_equal(apply("SetOrganizationStatus", "{\"ID\":\"" ORG "\",\"Enabled\":1}"), KA_FAIL);
    assert_int_equal(apply("CreateConnection", "{\"ID\":\"cnX123456789\",\"Workspace\":\"" WS
                                               "\",\"Name\":\"x\",\"Role\":3}"),
                     KA_FAIL);
    assert_int_equal(apply("CreateAccessKey",
                           "{\"ID\":\"" KEY_ID "\",\"Organization\":\"" ORG
                           "\",\"Workspace\":\"\",\"Type\":0,\"HMAC\":\"AAAA\"}"),
                     KA_FAIL);
    /* Member names are case-sensitive, as Go writes them. */
    assert_int_equal(apply("DeleteOrganization", "{\"id\":\"" ORG "\"}"), KA_FAIL);
    assert_int_equal(get_org(ORG, &e), KA_OK);
    /* Names the edge ignores change nothing, whatever their payload. */
    ok("SetAccount", "{\"AccessToken\":\"secret\"}");
    ok("SetAccount", NULL);
    assert_int_equal(ka_mirror_name_relevant("SetAccount"), 0);
    assert_int_equal(ka_mirror_name_relevant("DeleteEventWriteKey"), 1);
    assert_int_equal(ka_mirror_name_relevant("deleteEventWriteKey"), 0);
}

static void test_snapshot_rows(void **state)
{
    uint8_t digest[KA_DIGEST_LEN] = {7};
    ka_store_txn *txn;
    ka_key_rec r;

    (void)state;
    txn = wr();
    assert_int_equal(ka_mirror_org(txn, st, ORG, "Acme", 1), KA_OK);
    assert_int_equal(ka_mirror_org(txn, st, "bad", "x", 1), KA_NOTFOUND);
    assert_int_equal(ka_mirror_ws(txn, st, WS, ORG, "Web"), KA_OK);
    /* A connection of a workspace that is not there is left out. */
    assert_int_equal(ka_mirror_conn(txn, st, CONN, WS2, "x", 0), KA_NOTFOUND);
    assert_int_equal(ka_mirror_conn(txn, st, CONN, WS, "x", KA_CONN_DESTINATION), KA_OK);
    assert_int_equal(ka_mirror_write_key(txn, st, CONN, WKEY, 32, 5), KA_OK);
    assert_int_equal(ka_mirror_write_key(txn, st, CONN, "short", 5, 5), KA_NOTFOUND);
    assert_int_equal(ka_mirror_access_key(txn, st, KEY_ID, ORG, "", digest, 31, "", "", 1, 1),
                     KA_NOTFOUND);
    assert_int_equal(ka_mirror_access_key(txn, st, KEY_ID, ORG, "", digest, sizeof(digest),
                                          "abcd...efghij", "name", 1600000000, 0),
                     KA_OK);
    commit(txn);
    assert_int_equal(get_api(digest, &r), KA_OK);
    assert_string_equal(r.hint, "abcd...efghij");
    assert_string_equal(r.name, "name");
    assert_true(r.created == 1600000000);
    assert_int_equal(get_write(WKEY, &r), KA_OK);
    assert_true(r.created == 5);
}

/* ---- kms.c ---- */

static void test_base64(void **state)
{
    uint8_t out[8];

    (void)state;
    assert_int_equal(ka_base64_decode("aGVsbG8=", 8, out, sizeof(out)), 5);
    assert_memory_equal(out, "hello", 5);
    assert_int_equal(ka_base64_decode("aGVsbG8", 7, out, sizeof(out)), 5);
    assert_int_equal(ka_base64_decode("aGk=", 4, out, sizeof(out)), 2);
    assert_int_equal(ka_base64_decode("", 0, out, sizeof(out)), 0);
    assert_int_equal(ka_base64_decode("aGVsbG8==", 9, out, sizeof(out)), -1);
    assert_int_equal(ka_base64_decode("aGV-bG8=", 8, out, sizeof(out)), -1); /* URL alphabet */
    assert_int_equal(ka_base64_decode("aGVsbG9=", 8, out, sizeof(out)), -1); /* not canonical */
    assert_int_equal(ka_base64_decode("a", 1, out, sizeof(out)), -1);
    assert_int_equal(ka_base64_decode("aGVsbG8gd29ybGQ=", 16, out, sizeof(out)), -1); /* cap */
}

static void seal(const uint8_t key[32], const uint8_t pepper[32], uint8_t blob[60])
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, fin = 0;

    memset(blob, 0x42, 12);
    assert_int_equal(EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, blob), 1);
    assert_int_equal(EVP_EncryptUpdate(ctx, blob + 12, &n, pepper, 32), 1);
    assert_int_equal(EVP_EncryptFinal_ex(ctx, blob + 12 + n, &fin), 1);
    assert_int_equal(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, blob + 44), 1);
    EVP_CIPHER_CTX_free(ctx);
}

static void test_kms(void **state)
{
    uint8_t key[32], pepper[32], blob[60], out[32], parsed[32];
    char err[256], spec[64] = "key:";

    (void)state;
    for (int i = 0; i < 32; i++) {
        key[i] = (uint8_t)(3 * i + 1);
        pepper[i] = (uint8_t)(255 - i);
    }
    seal(key, pepper, blob);
    EVP_EncodeBlock((unsigned char *)spec + 4, key, 32);
    assert_int_equal(strlen(spec), 4 + 44);
    assert_int_equal(ka_kms_parse(spec, parsed, err, sizeof(err)), 0);
    assert_memory_equal(parsed, key, 32);
    spec[strlen(spec) - 1] = '\0'; /* unpadded: 43 characters */
    assert_int_equal(ka_kms_parse(spec, parsed, err, sizeof(err)), 0);
    assert_memory_equal(parsed, key, 32);
    assert_int_equal(ka_kms_parse(spec + 4, parsed, err, sizeof(err)), -1);
    assert_int_equal(ka_kms_parse("key:AAAA", parsed, err, sizeof(err)), -1);
    assert_null(strstr(err, "AAAA"));
    assert_int_equal(ka_kms_decrypt_pepper(key, blob, 60, out, err, sizeof(err)), 0);
    assert_memory_equal(out, pepper, 32);
    blob[20] ^= 1;
    assert_int_equal(ka_kms_decrypt_pepper(key, blob, 60, out, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "does not decrypt"));
    blob[20] ^= 1;
    key[0] ^= 1;
    assert_int_equal(ka_kms_decrypt_pepper(key, blob, 60, out, err, sizeof(err)), -1);
    assert_int_equal(ka_kms_decrypt_pepper(key, blob, 59, out, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "59 bytes"));
}

int run_mirror_tests(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_organizations),      T(test_connections),   T(test_access_keys),
        T(test_bad_payloads),       T(test_snapshot_rows), cmocka_unit_test(test_base64),
        cmocka_unit_test(test_kms),
    };
#undef T
    return cmocka_run_group_tests_name("mirror", tests, NULL, NULL);
}
