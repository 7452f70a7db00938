"""A PLC for tests: pymodbus's own RTU server plus the mailbox/coil logic of docs/protocol.md.

Usage: python modbus_plc.py PORT LOG [corrupt drop duplicate]  (fault probabilities per packet)
Every actuation is a JSON line {"event": "actuate", ...} in LOG.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

REG, COIL = 100, 10


def main() -> None:
    port, log_path = sys.argv[1], sys.argv[2]
    corrupt, drop, dup = (float(x) for x in (sys.argv[3:6] or (0, 0, 0)))
    rng = random.Random(3)
    logf = open(log_path, "a", buffering=1)
    coil_state = {"on": False}

    def event(name, **kw):
        logf.write(json.dumps({"event": name, "t": time.monotonic(), **kw}) + "\n")

    async def plc(func_code, start, address, count, regs, values):
        if func_code == 16 and address == REG and values:
            seq, hi, lo, delay = values[:4]
            ack_idx = REG + 4 - start
            if seq != regs[ack_idx]:           # new command: execute once
                event("actuate", part_id=(hi << 16) | lo, seq=seq, delay=delay)
                regs[ack_idx] = seq
        elif func_code == 5 and address == COIL and values is not None:
            on = bool(values[0])
            if on and not coil_state["on"]:    # rising edge = one reject
                event("actuate", part_id=None, coil=COIL)
            coil_state["on"] = on
        elif func_code == 16 and address == REG + 5 and values:
            event("watchdog", value=values[0])
        return None

    def trace(sending: bool, data: bytes) -> bytes:
        r = rng.random()
        if r < drop:
            event("inject", kind="drop", sending=sending)
            return b""
        if r < drop + corrupt and data:
            event("inject", kind="corrupt", sending=sending)
            bad = bytearray(data)
            bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
            return bytes(bad)
        if r < drop + corrupt + dup and sending:
            event("inject", kind="duplicate", sending=sending)
            return data + data
        return data

    device = SimDevice(id=1, simdata=[SimData(1, count=300, values=0, datatype=DataType.REGISTERS)],
                       use_bit_addressing=False, action=plc)
    async def serve():
        server = ModbusSerialServer(device, port=port, baudrate=19200, reconnect_delay=0.05,
                                    trace_packet=trace if (corrupt or drop or dup) else None)
        event("start")
        print("ready", flush=True)
        await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
