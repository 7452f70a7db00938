/* Portable protocol core of the edge-inspect I/O bridge (see docs/protocol.md).
 * No malloc, no I/O: bytes in through bridge_rx(), time through now_ms
 * arguments, everything out through the callbacks in bridge_io_t. */
#ifndef BRIDGE_CORE_H
#define BRIDGE_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BC_FW_VERSION 1

#define BC_REJECT 0x01
#define BC_PASS 0x02
#define BC_HEARTBEAT 0x03
#define BC_ACK 0x81
#define BC_NAK 0x82
#define BC_STATUS 0x83
#define BC_FAULT 0x84

#define BC_NAK_FRAMING 1
#define BC_NAK_BAD_TYPE 2
#define BC_NAK_BAD_LENGTH 3
#define BC_NAK_BAD_VALUE 4
#define BC_NAK_BUSY 5

#define BC_STATUS_REPLY 0
#define BC_STATUS_BOOT 1
#define BC_STATUS_RECOVERED 2

#define BC_FAULT_HEARTBEAT_LOST 1

#define BC_FLAG_FAILSAFE 0x01
#define BC_FLAG_REJECT_OUT 0x02
#define BC_FLAG_ALARM_OUT 0x04

#define BC_UNIT_MS 0
#define BC_UNIT_TICKS 1

#define BC_HEADER_LEN 5
#define BC_MAX_RAW 32
#define BC_MAX_BODY (BC_MAX_RAW - BC_HEADER_LEN - 2)
#define BC_MAX_ENCODED (BC_MAX_RAW + 1)

#define BC_SEQ_RING 16
#define BC_PART_RING 32
#define BC_SCHED_SLOTS 16

/* Frame/codec errors returned by bc_frame_decode (negative). */
#define BC_ERR_COBS (-1)
#define BC_ERR_SHORT (-2)
#define BC_ERR_SIZE (-3)
#define BC_ERR_CRC (-4)

typedef struct {
    /* Write bytes to the UART (one whole frame, delimiter included). */
    void (*tx)(void *ctx, const uint8_t *buf, uint16_t len);
    /* Drive the outputs; called only when one of them changes. */
    void (*set_outputs)(void *ctx, uint8_t reject_on, uint8_t alarm_on);
    /* Optional (may be NULL): a reject was actuated. */
    void (*on_actuate)(void *ctx, uint32_t part_id);
    void *ctx;
} bridge_io_t;

typedef struct {
    uint16_t failsafe_ms;    /* used until the first HEARTBEAT sets it */
    uint16_t pulse_ms;       /* reject output pulse length */
    uint8_t failsafe_reject; /* hold the reject output on in fail-safe */
} bridge_config_t;

typedef struct {
    uint32_t part_id;
    uint32_t due;
    uint8_t unit;
    uint8_t used;
} bridge_sched_t;

typedef struct {
    bridge_config_t cfg;
    bridge_io_t io;
    uint16_t boot_id;
    uint16_t session;
    uint8_t have_session;
    uint8_t failsafe;
    uint8_t pulse;
    uint8_t out_reject;
    uint8_t out_alarm;
    uint8_t rx_overflow;
    uint8_t rx_len;
    uint8_t seq_count, seq_head, part_count, part_head;
    uint16_t failsafe_ms;
    uint16_t seqs[BC_SEQ_RING];
    uint32_t parts[BC_PART_RING];
    bridge_sched_t sched[BC_SCHED_SLOTS];
    uint32_t enc_count;
    uint32_t last_rx;
    uint32_t pulse_until;
    uint32_t actuations;
    uint32_t passes;
    uint16_t rx_errors;
    uint16_t duplicates;
    uint8_t rx_buf[BC_MAX_ENCODED];
} bridge_t;

/* Codec (pure functions). */
uint16_t bc_crc16(const uint8_t *data, size_t len, uint16_t crc);
/* out needs len + len/254 + 1 bytes; returns encoded length. */
size_t bc_cobs_encode(const uint8_t *in, size_t len, uint8_t *out);
/* Returns decoded length, or BC_ERR_COBS; out needs len bytes (cap: out_cap). */
int bc_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap);
/* Encode a frame with delimiter into out (>= BC_MAX_ENCODED + 1 bytes).
 * Returns the length, or -1 if body_len > BC_MAX_BODY. */
int bc_frame_encode(uint8_t type, uint16_t epoch, uint16_t seq, const uint8_t *body,
                    uint8_t body_len, uint8_t *out);
/* Decode one COBS block (no delimiter). body needs BC_MAX_BODY bytes.
 * Returns body length (>= 0) or a BC_ERR_* code. */
int bc_frame_decode(const uint8_t *enc, size_t len, uint8_t *type, uint16_t *epoch,
                    uint16_t *seq, uint8_t *body);

/* Bridge state machine. */
void bridge_init(bridge_t *b, const bridge_config_t *cfg, const bridge_io_t *io,
                 uint16_t boot_id, uint32_t now_ms);
void bridge_rx_byte(bridge_t *b, uint8_t byte, uint32_t now_ms);
void bridge_rx(bridge_t *b, const uint8_t *buf, size_t len, uint32_t now_ms);
void bridge_tick(bridge_t *b, uint32_t now_ms);
void bridge_encoder_tick(bridge_t *b, uint32_t now_ms);
uint8_t bridge_flags(const bridge_t *b);
/* out[0..4] = actuations, passes, rx_errors, duplicates, failsafe_ms. */
void bridge_stats(const bridge_t *b, uint32_t out[5]);
size_t bridge_sizeof(void);

#ifdef __cplusplus
}
#endif
#endif
