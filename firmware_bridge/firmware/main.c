/* edge-inspect I/O bridge firmware for an ATmega328P (Arduino Uno/Nano), avr-libc.
 *
 * UART0 115200 8N1 (U2X) to the edge PC; PB0 (D8) = reject output, PB1 (D9) =
 * alarm output (each through a 24 V driver to the PLC input); PD2 (D2, INT0) =
 * encoder pulses. Timer0 gives a 1 ms tick. The watchdog resets a hung board.
 * All protocol logic is in bridge_core.c (see docs/protocol.md).
 *
 * Build: make -C firmware_bridge/firmware   (avr-gcc, avr-libc)
 */
#include <avr/eeprom.h>
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/wdt.h>
#include <util/atomic.h>

#include "bridge_core.h"

#ifndef F_CPU
#define F_CPU 16000000UL
#endif
#define BAUD 115200UL
#define RX_RING 128 /* power of two */

static volatile uint32_t ms_now;
static volatile uint16_t enc_pending;
static volatile uint8_t rx_ring[RX_RING];
static volatile uint8_t rx_head, rx_tail;
static uint16_t EEMEM ee_boot_count;

ISR(TIMER0_COMPA_vect) { ms_now++; }

ISR(INT0_vect) { enc_pending++; }

ISR(USART_RX_vect) {
    uint8_t b = UDR0;
    uint8_t next = (uint8_t)((rx_head + 1) & (RX_RING - 1));
    if (next != rx_tail) { /* on overflow the byte is dropped; COBS/CRC catch the damage */
        rx_ring[rx_head] = b;
        rx_head = next;
    }
}

static uint32_t millis(void) {
    uint32_t t;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { t = ms_now; }
    return t;
}

static void uart_tx(void *ctx, const uint8_t *buf, uint16_t len) {
    (void)ctx;
    while (len--) {
        while (!(UCSR0A & _BV(UDRE0))) {
        }
        UDR0 = *buf++;
    }
}

static void set_outputs(void *ctx, uint8_t reject_on, uint8_t alarm_on) {
    (void)ctx;
    if (reject_on) PORTB |= _BV(PB0); else PORTB &= (uint8_t)~_BV(PB0);
    if (alarm_on) PORTB |= _BV(PB1); else PORTB &= (uint8_t)~_BV(PB1);
}

static void hw_init(void) {
    DDRB |= _BV(PB0) | _BV(PB1);
    /* UART: U2X, 115200 at 16 MHz -> UBRR 16 (2.1 % error, within tolerance). */
    UCSR0A = _BV(U2X0);
    UBRR0 = (uint16_t)((F_CPU / (8UL * BAUD)) - 1UL);
    UCSR0B = _BV(RXEN0) | _BV(TXEN0) | _BV(RXCIE0);
    UCSR0C = _BV(UCSZ01) | _BV(UCSZ00);
    /* Timer0 CTC, /64, 250 counts -> 1 ms. */
    TCCR0A = _BV(WGM01);
    TCCR0B = _BV(CS01) | _BV(CS00);
    OCR0A = 249;
    TIMSK0 = _BV(OCIE0A);
    /* Encoder on INT0, rising edge, with pull-up. */
    PORTD |= _BV(PD2);
    EICRA = _BV(ISC01) | _BV(ISC00);
    EIMSK = _BV(INT0);
}

int main(void) {
    static bridge_t bridge;
    const bridge_config_t cfg = {1000, 50, 1};
    const bridge_io_t io = {uart_tx, set_outputs, 0, 0};
    uint16_t boot;

    MCUSR = 0;
    wdt_disable();
    hw_init();
    /* Boot id: a counter in EEPROM (one write per boot), so the host sees every reset. */
    boot = (uint16_t)(eeprom_read_word(&ee_boot_count) + 1);
    eeprom_write_word(&ee_boot_count, boot);
    sei();
    bridge_init(&bridge, &cfg, &io, boot, millis()); /* boots in fail-safe, sends STATUS */
    wdt_enable(WDTO_250MS);

    for (;;) {
        uint32_t now = millis();
        uint16_t enc;
        while (rx_tail != rx_head) {
            uint8_t b = rx_ring[rx_tail];
            rx_tail = (uint8_t)((rx_tail + 1) & (RX_RING - 1));
            bridge_rx_byte(&bridge, b, now);
        }
        ATOMIC_BLOCK(ATOMIC_RESTORESTATE) {
            enc = enc_pending;
            enc_pending = 0;
        }
        while (enc--) bridge_encoder_tick(&bridge, now);
        bridge_tick(&bridge, now);
        wdt_reset();
    }
}
