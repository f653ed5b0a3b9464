/* `krenalis-keys mirror` (SPEC §11) and `krenalis-keys upgrade`: commands with options of their
 * own, so the CLI hands them the whole command line. Guide: docs/mirror.md. */
#ifndef KA_MIRROR_H
#define KA_MIRROR_H

/* Runs `mirror` or `upgrade` when argv names one (after the global options) and returns the
 * exit status; returns -1 when argv is another command. */
int ka_mirror_cli(int argc, char **argv);

#endif
