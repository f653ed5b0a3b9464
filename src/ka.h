/* Types shared by the module, krenalis-keys and the unit tests. */
#ifndef KA_H
#define KA_H

#include <stddef.h>
#include <stdint.h>

#define KA_ID_LEN 12          /* organization, workspace, connection and key IDs */
#define KA_API_BODY_LEN 49    /* characters after "api_" */
#define KA_API_TOKEN_LEN 53   /* "api_" + body */
#define KA_PAYLOAD_LEN 32     /* random bytes inside an API key */
#define KA_WRITE_KEY_LEN 32   /* event write keys: [A-Za-z0-9]{32} */
#define KA_ORG_KEY_LEN 47     /* "org_" + 43 alphanumerics */
#define KA_DIGEST_LEN 32      /* HMAC-SHA-256 */
#define KA_SECRET_LEN 32      /* store secret */
#define KA_MAX_WRITE_KEYS 20  /* per connection */
#define KA_HINT_MAX 16        /* 4 + "..." + 6 */
#define KA_NAME_MAX 200       /* names of organizations, workspaces, connections, keys */
#define KA_MAX_TOKEN_LEN 8192 /* longer Authorization values are refused unparsed */

typedef enum { KA_KEY_NONE = 0, KA_KEY_API, KA_KEY_WRITE, KA_KEY_ORGS } ka_key_type;

/* What a successful authentication hands to the backend (SPEC §8). Empty strings mean "none". */
typedef struct {
    ka_key_type type;
    char key_id[16]; /* a key ID, or "organizations" */
    char org[KA_ID_LEN + 1];
    char ws[KA_ID_LEN + 1];
    char conn[KA_ID_LEN + 1];
} ka_identity;

const char *ka_key_type_name(ka_key_type t);

#endif
