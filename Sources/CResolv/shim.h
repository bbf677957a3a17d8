// glibc's resolver: res_nquery, ns_initparse, ns_parserr, dn_expand.
#ifndef DUALMTA_CRESOLV_SHIM_H
#define DUALMTA_CRESOLV_SHIM_H
#include <sys/types.h>
#include <netinet/in.h>
#include <arpa/nameser.h>
#include <resolv.h>
#endif
