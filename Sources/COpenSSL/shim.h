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
// Added for the TLS module (memory-BIO sessions, context options, key generation).
#include <openssl/x509v3.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/ec.h>

static inline long dualmta_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_max_proto_version(ctx, version);
}
static inline long dualmta_SSL_CTX_set_dh_auto(SSL_CTX *ctx, int onoff) {
    return SSL_CTX_set_dh_auto(ctx, onoff);
}
static inline long dualmta_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_mode(ctx, mode);
}
static inline long dualmta_BIO_set_mem_eof_return(BIO *bio, int value) {
    return BIO_set_mem_eof_return(bio, value);
}
// SSL_OP_* are built with the function-like SSL_OP_BIT macro, which Swift does not import.
static inline uint64_t dualmta_SSL_OP_NO_COMPRESSION(void) { return SSL_OP_NO_COMPRESSION; }
static inline uint64_t dualmta_SSL_OP_NO_RENEGOTIATION(void) { return SSL_OP_NO_RENEGOTIATION; }
static inline uint64_t dualmta_SSL_OP_CIPHER_SERVER_PREFERENCE(void) { return SSL_OP_CIPHER_SERVER_PREFERENCE; }
// EVP_RSA_gen / EVP_EC_gen expand to the variadic EVP_PKEY_Q_keygen, which Swift cannot call.
static inline EVP_PKEY *dualmta_EVP_RSA_gen(unsigned int bits) {
    return EVP_RSA_gen(bits);
}
static inline EVP_PKEY *dualmta_EVP_EC_gen(const char *curve) {
    return EVP_EC_gen(curve);
}
// Stack accessors and name-printing flags are macros too.
static inline int dualmta_sk_GENERAL_NAME_num(const GENERAL_NAMES *names) {
    return sk_GENERAL_NAME_num(names);
}
static inline GENERAL_NAME *dualmta_sk_GENERAL_NAME_value(const GENERAL_NAMES *names, int index) {
    return sk_GENERAL_NAME_value(names, index);
}
static inline unsigned long dualmta_XN_FLAG_RFC2253(void) { return XN_FLAG_RFC2253; }
#endif
