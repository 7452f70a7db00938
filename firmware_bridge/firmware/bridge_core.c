/* Portable protocol core of the edge-inspect I/O bridge. C99, no malloc, no I/O.
 * Keep in step with firmware_bridge/bridge.py: tests compare both byte for byte. */
#include "bridge_core.h"

#include <string.h>

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void wr32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
/* Wrap-safe now >= due. */
static int due(uint32_t now, uint32_t when) { return (uint32_t)(now - when) < 0x80000000UL; }

uint16_t bc_crc16(const uint8_t *data, size_t len, uint16_t crc) {
    size_t i;
    uint8_t bit;
    for (i = 0; i < len; i++) {
        crc ^= (uint16_t)data[i] << 8;
        for (bit = 0; bit < 8; bit++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

size_t bc_cobs_encode(const uint8_t *in, size_t len, uint8_t *out) {
    size_t i, o = 1, code_idx = 0;
    uint8_t code = 1;
    for (i = 0; i < len; i++) {
        if (in[i] == 0) {
            out[code_idx] = code;
            code_idx = o++;
            code = 1;
        } else {
            out[o++] = in[i];
            if (++code == 0xFF) {
                out[code_idx] = code;
                code_idx = o++;
                code = 1;
            }
        }
    }
    out[code_idx] = code;
    return o;
}

int bc_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap) {
    size_t i = 0, o = 0, end;
    uint8_t code;
    while (i < len) {
        code = in[i++];
        if (code == 0) return BC_ERR_COBS;
        end = i + code - 1;
        if (end > len) return BC_ERR_COBS;
        if (o + (end - i) > out_cap) return BC_ERR_COBS;
        while (i < end) out[o++] = in[i++];
        if (code < 0xFF && i < len) {
            if (o >= out_cap) return BC_ERR_COBS;
            out[o++] = 0;
        }
    }
    return (int)o;
}

int bc_frame_encode(uint8_t type, uint16_t epoch, uint16_t seq, const uint8_t *body,
                    uint8_t body_len, uint8_t *out) {
    uint8_t raw[BC_MAX_RAW];
    uint16_t crc;
    size_t n;
    if (body_len > BC_MAX_BODY) return -1;
    raw[0] = type;
    wr16(raw + 1, epoch);
    wr16(raw + 3, seq);
    if (body_len) memcpy(raw + BC_HEADER_LEN, body, body_len);
    n = (size_t)BC_HEADER_LEN + body_len;
    crc = bc_crc16(raw, n, 0xFFFF);
    raw[n++] = (uint8_t)(crc >> 8);
    raw[n++] = (uint8_t)crc;
    n = bc_cobs_encode(raw, n, out);
    out[n++] = 0;
    return (int)n;
}

int bc_frame_decode(const uint8_t *enc, size_t len, uint8_t *type, uint16_t *epoch,
                    uint16_t *seq, uint8_t *body) {
    uint8_t raw[BC_MAX_RAW];
    int n;
    if (len > BC_MAX_ENCODED) return BC_ERR_SIZE;
    /* A block of up to BC_MAX_ENCODED bytes decodes to at most BC_MAX_ENCODED bytes;
     * anything over BC_MAX_RAW is a size error, as in protocol.py. */
    {
        uint8_t tmp[BC_MAX_ENCODED];
        n = bc_cobs_decode(enc, len, tmp, sizeof tmp);
        if (n < 0) return BC_ERR_COBS;
        if (n < BC_HEADER_LEN + 2) return BC_ERR_SHORT;
        if (n > BC_MAX_RAW) return BC_ERR_SIZE;
        memcpy(raw, tmp, (size_t)n);
    }
    if (bc_crc16(raw, (size_t)n, 0xFFFF) != 0) return BC_ERR_CRC;
    *type = raw[0];
    *epoch = rd16(raw + 1);
    *seq = rd16(raw + 3);
    n -= BC_HEADER_LEN + 2;
    if (n) memcpy(body, raw + BC_HEADER_LEN, (size_t)n);
    return n;
}

/* ---- bridge state machine ---------------------------------------------- */

uint8_t bridge_flags(const bridge_t *b) {
    return (uint8_t)((b->failsafe ? BC_FLAG_FAILSAFE : 0) | (b->out_reject ? BC_FLAG_REJECT_OUT : 0) |
                     (b->out_alarm ? BC_FLAG_ALARM_OUT : 0));
}

size_t bridge_sizeof(void) { return sizeof(bridge_t); }

void bridge_stats(const bridge_t *b, uint32_t out[5]) {
    out[0] = b->actuations;
    out[1] = b->passes;
    out[2] = b->rx_errors;
    out[3] = b->duplicates;
    out[4] = b->failsafe_ms;
}

static void send(bridge_t *b, uint8_t type, uint16_t seq, const uint8_t *body, uint8_t len) {
    uint8_t out[BC_MAX_ENCODED + 1];
    int n = bc_frame_encode(type, b->boot_id, seq, body, len, out);
    if (n > 0) b->io.tx(b->io.ctx, out, (uint16_t)n);
}

static void send_ack(bridge_t *b, uint16_t seq) {
    uint8_t body[1];
    body[0] = bridge_flags(b);
    send(b, BC_ACK, seq, body, 1);
}

static void send_nak(bridge_t *b, uint16_t seq, uint8_t reason) {
    uint8_t body[2];
    body[0] = reason;
    body[1] = bridge_flags(b);
    send(b, BC_NAK, seq, body, 2);
}

static void send_status(bridge_t *b, uint16_t seq, uint8_t reason) {
    uint8_t body[13];
    body[0] = bridge_flags(b);
    body[1] = reason;
    body[2] = BC_FW_VERSION;
    wr16(body + 3, b->failsafe_ms);
    wr32(body + 5, b->actuations);
    wr16(body + 9, b->rx_errors);
    wr16(body + 11, b->duplicates);
    send(b, BC_STATUS, seq, body, 13);
}

static void update_outputs(bridge_t *b) {
    uint8_t rej = (uint8_t)(b->pulse || (b->failsafe && b->cfg.failsafe_reject));
    uint8_t alarm = b->failsafe;
    if (rej != b->out_reject || alarm != b->out_alarm) {
        b->out_reject = rej;
        b->out_alarm = alarm;
        b->io.set_outputs(b->io.ctx, rej, alarm);
    }
}

static void actuate(bridge_t *b, uint32_t part_id, uint32_t now) {
    b->actuations++;
    b->pulse_until = now + b->cfg.pulse_ms;
    b->pulse = 1;
    if (b->io.on_actuate) b->io.on_actuate(b->io.ctx, part_id);
    update_outputs(b);
}

static int seq_seen(const bridge_t *b, uint16_t seq) {
    uint8_t i;
    for (i = 0; i < b->seq_count; i++)
        if (b->seqs[i] == seq) return 1;
    return 0;
}

static void seq_remember(bridge_t *b, uint16_t seq) {
    b->seqs[b->seq_head] = seq;
    b->seq_head = (uint8_t)((b->seq_head + 1) % BC_SEQ_RING);
    if (b->seq_count < BC_SEQ_RING) b->seq_count++;
}

static int part_seen(const bridge_t *b, uint32_t part) {
    uint8_t i;
    for (i = 0; i < b->part_count; i++)
        if (b->parts[i] == part) return 1;
    return 0;
}

static void part_remember(bridge_t *b, uint32_t part) {
    b->parts[b->part_head] = part;
    b->part_head = (uint8_t)((b->part_head + 1) % BC_PART_RING);
    if (b->part_count < BC_PART_RING) b->part_count++;
}

void bridge_init(bridge_t *b, const bridge_config_t *cfg, const bridge_io_t *io,
                 uint16_t boot_id, uint32_t now_ms) {
    memset(b, 0, sizeof *b);
    b->cfg = *cfg;
    b->io = *io;
    b->boot_id = boot_id;
    b->failsafe = 1; /* no host yet */
    b->failsafe_ms = cfg->failsafe_ms;
    b->last_rx = now_ms;
    b->out_reject = 0xFF; /* force the first set_outputs call */
    update_outputs(b);
    send_status(b, 0, BC_STATUS_BOOT);
}

static void handle_frame(bridge_t *b, uint8_t type, uint16_t epoch, uint16_t seq,
                         const uint8_t *body, int len, uint32_t now) {
    uint32_t part, delay;
    uint8_t unit, i;
    if (type != BC_REJECT && type != BC_PASS && type != BC_HEARTBEAT) {
        send_nak(b, seq, BC_NAK_BAD_TYPE);
        return;
    }
    b->last_rx = now;
    if (!b->have_session || b->session != epoch) { /* new host session */
        b->have_session = 1;
        b->session = epoch;
        b->seq_count = b->seq_head = 0;
        b->part_count = b->part_head = 0;
    }
    if ((type == BC_REJECT && len != 9) || (type == BC_PASS && len != 4) ||
        (type == BC_HEARTBEAT && len != 2)) {
        send_nak(b, seq, BC_NAK_BAD_LENGTH);
        return;
    }
    if (type == BC_HEARTBEAT) {
        uint16_t fs = rd16(body);
        uint8_t reason = BC_STATUS_REPLY;
        if (fs) b->failsafe_ms = fs;
        if (b->failsafe) {
            b->failsafe = 0;
            update_outputs(b);
            reason = BC_STATUS_RECOVERED;
        }
        send_status(b, seq, reason);
        return;
    }
    if (seq_seen(b, seq)) {
        b->duplicates++;
        send_ack(b, seq);
        return;
    }
    if (type == BC_PASS) {
        b->passes++;
    } else {
        part = rd32(body);
        delay = rd32(body + 4);
        unit = body[8];
        if (unit > BC_UNIT_TICKS) {
            send_nak(b, seq, BC_NAK_BAD_VALUE);
            return;
        }
        if (part_seen(b, part)) {
            b->duplicates++;
        } else if (delay == 0) {
            actuate(b, part, now);
            part_remember(b, part);
        } else {
            for (i = 0; i < BC_SCHED_SLOTS && b->sched[i].used; i++) {
            }
            if (i == BC_SCHED_SLOTS) {
                send_nak(b, seq, BC_NAK_BUSY);
                return;
            }
            b->sched[i].part_id = part;
            b->sched[i].due = (unit == BC_UNIT_MS ? now : b->enc_count) + delay;
            b->sched[i].unit = unit;
            b->sched[i].used = 1;
            part_remember(b, part);
        }
    }
    seq_remember(b, seq);
    send_ack(b, seq);
}

static void end_of_frame(bridge_t *b, uint32_t now) {
    uint8_t type, body[BC_MAX_BODY];
    uint16_t epoch, seq;
    int n;
    if (b->rx_overflow) {
        n = BC_ERR_SIZE;
    } else if (b->rx_len == 0) {
        return; /* empty frame: repeated delimiter */
    } else {
        n = bc_frame_decode(b->rx_buf, b->rx_len, &type, &epoch, &seq, body);
    }
    b->rx_len = 0;
    b->rx_overflow = 0;
    if (n < 0) {
        b->rx_errors++;
        send_nak(b, 0, BC_NAK_FRAMING);
        return;
    }
    handle_frame(b, type, epoch, seq, body, n, now);
}

void bridge_rx_byte(bridge_t *b, uint8_t byte, uint32_t now_ms) {
    if (byte == 0) {
        end_of_frame(b, now_ms);
    } else if (b->rx_len < BC_MAX_ENCODED) {
        if (!b->rx_overflow) b->rx_buf[b->rx_len++] = byte;
    } else {
        b->rx_overflow = 1;
        b->rx_len = 0;
    }
}

void bridge_rx(bridge_t *b, const uint8_t *buf, size_t len, uint32_t now_ms) {
    size_t i;
    for (i = 0; i < len; i++) bridge_rx_byte(b, buf[i], now_ms);
}

static void run_due(bridge_t *b, uint8_t unit, uint32_t clock, uint32_t now) {
    uint8_t i;
    for (i = 0; i < BC_SCHED_SLOTS; i++) {
        if (b->sched[i].used && b->sched[i].unit == unit && due(clock, b->sched[i].due)) {
            b->sched[i].used = 0;
            actuate(b, b->sched[i].part_id, now);
        }
    }
}

void bridge_tick(bridge_t *b, uint32_t now_ms) {
    uint8_t body[6];
    uint32_t idle = now_ms - b->last_rx;
    if (!b->failsafe && idle > b->failsafe_ms) {
        b->failsafe = 1;
        update_outputs(b);
        body[0] = BC_FAULT_HEARTBEAT_LOST;
        body[1] = bridge_flags(b);
        wr32(body + 2, idle);
        send(b, BC_FAULT, 0, body, 6);
    }
    run_due(b, BC_UNIT_MS, now_ms, now_ms);
    if (b->pulse && due(now_ms, b->pulse_until)) {
        b->pulse = 0;
        update_outputs(b);
    }
}

void bridge_encoder_tick(bridge_t *b, uint32_t now_ms) {
    b->enc_count++;
    run_due(b, BC_UNIT_TICKS, b->enc_count, now_ms);
}
