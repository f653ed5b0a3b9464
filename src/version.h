/* The project's version: the one place it is written. The module logs it at start-up,
 * `krenalis-keys --version` prints it, and `make deb` refuses a debian/changelog whose top
 * entry says otherwise (debian.mk). */
#ifndef KA_VERSION_H
#define KA_VERSION_H

#define KA_VERSION "0.1.0"

#endif
