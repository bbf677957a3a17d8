// Shims for OpenSSL: function-like macros become static inline functions Swift can call.
#ifndef DUALMTA_COPENSSL_SHIM_H
#define DUALMTA_COPENSSL_SHIM_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/bio.h>
#include <openssl/x509.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

static inline long dualmta_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_min_proto_version(ctx, version);
}
static inline long dualmta_SSL_set_tlsext_host_name(SSL *ssl, const char *name) {
    return SSL_set_tlsext_host_name(ssl, name);
}
static inline long dualmta_BIO_get_mem_data(BIO *bio, char **data) {
    return BIO_get_mem_data(bio, data);
}
static inline long dualmta_BIO_ctrl_pending(BIO *bio) {
    return (long)BIO_ctrl_pending(bio);
}
#endif
