// libxcrypt (Debian libcrypt-dev): crypt_r and crypt_gensalt_rn for the submission users file.
#include <crypt.h>
