/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The keystroke domain's wire format: the record tty.bpf.c writes into the
 * `events` ring buffer for every terminal read that passed the in-kernel
 * filters. This is the only place it is defined; the Rust side decodes it
 * through the skeleton's generated types and pins the same size and offsets.
 *
 * Rules (STYLE.md): fixed-width types only, largest first, explicit _pad
 * fields that are always written, struct rw_hdr first.
 */
#ifndef RW_TTY_H
#define RW_TTY_H

#include "common.h"
#include "task.h" /* struct rw_proc_id */

/* Record kind, from the keystroke range 48..63 reserved in common.h. */
#define RW_KIND_TTY_READ 48

/*
 * Input bytes copied per read. A read by readline returns one key; a
 * canonical read returns one line (N_TTY_BUF_SIZE, 4096, at most). Longer
 * reads (a paste in raw mode) are cut and flagged; their length is still
 * reported in read_len.
 */
#define RW_TTY_DATA_MAX 4096
#define RW_TTY_DATA_MASK (RW_TTY_DATA_MAX - 1)

/* Entries of the uid / gid filter maps. */
#define RW_TTY_FILTER_MAX 1024

/* tty_read_event hdr.flags */
#define RW_TTY_F_REDACTED 0x01 /* ICANON set and ECHO clear: no bytes follow, read_len is all there is */
#define RW_TTY_F_TRUNCATED 0x02 /* read_len > data_len: the read was longer than RW_TTY_DATA_MAX */
#define RW_TTY_F_READV 0x04 /* read with readv(2); only the first iovec is copied */
#define RW_TTY_F_LINE_END 0x08 /* redacted read whose last byte is '\n': the secret line is complete */

/* include/uapi/asm-generic/termbits.h: c_lflag bits. */
#define RW_ICANON 0000002
#define RW_ECHO 0000010

/* include/uapi/linux/stat.h */
#define RW_S_IFMT 00170000
#define RW_S_IFCHR 0020000

/* Device majors of terminals (Documentation/admin-guide/devices.txt). */
#define RW_TTY_MAJOR 4 /* virtual consoles tty0..63, serial ttyS */
#define RW_TTYAUX_MAJOR 5 /* 5:0 /dev/tty, 5:1 /dev/console, 5:2 /dev/ptmx (the pty master: output, never input) */
#define RW_PTMX_MINOR 2
#define RW_PTS_MAJOR_FIRST 136 /* UNIX98 pty slaves, 136..143 */
#define RW_PTS_MAJOR_LAST 143

/*
 * One terminal read, written at sys_exit_read(v) when it returned > 0 bytes.
 * data_len bytes of input follow the fixed part in the same sample (none
 * when RW_TTY_F_REDACTED); hdr.size = sizeof(struct tty_read_event) + data_len.
 * tty_major/tty_minor name the terminal read from (not the controlling
 * terminal), as tty_devnum() computes it.
 */
struct tty_read_event {
	struct rw_hdr hdr;
	struct rw_proc_id id;
	__u32 uid; /* real uid of the reader */
	__u32 euid; /* effective uid of the reader */
	__u32 gid; /* real gid of the reader */
	__u32 session_id; /* session leader's pid (initial pid namespace) */
	__u32 tty_major;
	__u32 tty_minor;
	__u32 read_len; /* bytes the read returned */
	__u32 lflag; /* the terminal's c_lflag when the read started */
	__u16 data_len; /* bytes that follow */
	__u16 _pad;
	__u32 _pad2;
};
_Static_assert(sizeof(struct tty_read_event) == 96, "tty_read_event layout changed: update the Rust asserts");
_Static_assert(__builtin_offsetof(struct tty_read_event, uid) == 56,
	       "tty_read_event layout changed: update the Rust asserts");

#endif /* RW_TTY_H */
