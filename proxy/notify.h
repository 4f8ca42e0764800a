/*
 * notify.h: systemd's notify protocol (sd_notify), written here: one
 * datagram to $NOTIFY_SOCKET.  Does nothing when it is not set.
 */
#ifndef DMTLS_NOTIFY_H
#define DMTLS_NOTIFY_H

#include <stdint.h>

/* notify_send(state): e.g. "READY=1"; 0, or -1 when it could not be sent. */
int notify_send(const char *);

/* notify_watchdog_usec(): $WATCHDOG_USEC when it is meant for us, else 0. */
uint64_t notify_watchdog_usec(void);

#endif
