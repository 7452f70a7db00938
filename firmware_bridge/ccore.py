"""Build firmware/bridge_core.c with the host's gcc and drive it through ctypes.

:class:`CCore` has the same interface as :class:`firmware_bridge.bridge.BridgeCore`,
so the simulator and the tests can run either.
"""

from __future__ import annotations

import ctypes as C
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from .bridge import BridgeConfig

FIRMWARE_DIR = Path(__file__).resolve().parent / "firmware"
SOURCES = [FIRMWARE_DIR / "bridge_core.c"]
HEADERS = [FIRMWARE_DIR / "bridge_core.h"]
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Wconversion", "-Werror"]


class BuildError(RuntimeError):
    """gcc is missing or the C core does not compile."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edge-inspect" / "firmware_bridge"


def build(out: Path | None = None, extra_flags: tuple[str, ...] = (), cc: str = "gcc") -> Path:
    """Compile the C core to a shared library; reuse it while sources and flags are unchanged."""
    if shutil.which(cc) is None:
        raise BuildError(f"{cc} not found: install a C compiler (apt-get install gcc)")
    h = hashlib.sha256(" ".join(CFLAGS + list(extra_flags)).encode())
    for src in SOURCES + HEADERS:
        h.update(src.read_bytes())
    lib = out or cache_dir() / f"bridge_core-{h.hexdigest()[:16]}.so"
    if lib.exists():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    tmp = lib.with_name(f"{lib.name}.{os.getpid()}.tmp")
    cmd = [cc, *CFLAGS, *extra_flags, "-fPIC", "-shared", "-o", str(tmp), *map(str, SOURCES)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise BuildError(f"compiling the bridge core failed:\n{' '.join(cmd)}\n{res.stderr}")
    os.replace(tmp, lib)  # atomic: parallel builders do not see half a file
    return lib


_TX = C.CFUNCTYPE(None, C.c_void_p, C.POINTER(C.c_uint8), C.c_uint16)
_OUT = C.CFUNCTYPE(None, C.c_void_p, C.c_uint8, C.c_uint8)
_ACT = C.CFUNCTYPE(None, C.c_void_p, C.c_uint32)


class _IO(C.Structure):
    _fields_ = [("tx", _TX), ("set_outputs", _OUT), ("on_actuate", _ACT), ("ctx", C.c_void_p)]


class _Config(C.Structure):
    _fields_ = [("failsafe_ms", C.c_uint16), ("pulse_ms", C.c_uint16), ("failsafe_reject", C.c_uint8)]


_libs: dict[str, C.CDLL] = {}


def load(path: Path | str | None = None) -> C.CDLL:
    """Load (building if needed) the C core and declare its signatures."""
    path = str(path or build())
    if path in _libs:
        return _libs[path]
    lib = C.CDLL(path)
    u8p = C.POINTER(C.c_uint8)
    lib.bc_crc16.argtypes = [u8p, C.c_size_t, C.c_uint16]
    lib.bc_crc16.restype = C.c_uint16
    lib.bc_cobs_encode.argtypes = [u8p, C.c_size_t, u8p]
    lib.bc_cobs_encode.restype = C.c_size_t
    lib.bc_cobs_decode.argtypes = [u8p, C.c_size_t, u8p, C.c_size_t]
    lib.bc_cobs_decode.restype = C.c_int
    lib.bc_frame_encode.argtypes = [C.c_uint8, C.c_uint16, C.c_uint16, u8p, C.c_uint8, u8p]
    lib.bc_frame_encode.restype = C.c_int
    lib.bc_frame_decode.argtypes = [u8p, C.c_size_t, u8p, C.POINTER(C.c_uint16), C.POINTER(C.c_uint16), u8p]
    lib.bc_frame_decode.restype = C.c_int
    lib.bridge_sizeof.restype = C.c_size_t
    lib.bridge_init.argtypes = [C.c_void_p, C.POINTER(_Config), C.POINTER(_IO), C.c_uint16, C.c_uint32]
    lib.bridge_rx.argtypes = [C.c_void_p, u8p, C.c_size_t, C.c_uint32]
    lib.bridge_tick.argtypes = [C.c_void_p, C.c_uint32]
    lib.bridge_encoder_tick.argtypes = [C.c_void_p, C.c_uint32]
    lib.bridge_flags.argtypes = [C.c_void_p]
    lib.bridge_flags.restype = C.c_uint8
    lib.bridge_stats.argtypes = [C.c_void_p, C.POINTER(C.c_uint32)]
    _libs[path] = lib
    return lib


def _buf(data: bytes):
    return (C.c_uint8 * max(1, len(data))).from_buffer_copy(data or b"\0")


class CCodec:
    """The C codec functions with Python types (for agreement tests)."""

    def __init__(self, lib: C.CDLL | None = None) -> None:
        self.lib = lib or load()

    def crc16(self, data: bytes, crc: int = 0xFFFF) -> int:
        return self.lib.bc_crc16(_buf(data), len(data), crc)

    def cobs_encode(self, data: bytes) -> bytes:
        out = (C.c_uint8 * (len(data) + len(data) // 254 + 2))()
        n = self.lib.bc_cobs_encode(_buf(data), len(data), out)
        return bytes(out[:n])

    def cobs_decode(self, data: bytes) -> bytes | None:
        out = (C.c_uint8 * max(1, len(data)))()
        n = self.lib.bc_cobs_decode(_buf(data), len(data), out, len(data))
        return None if n < 0 else bytes(out[:n])

    def encode_frame(self, type_: int, epoch: int, seq: int, body: bytes) -> bytes:
        out = (C.c_uint8 * 64)()
        n = self.lib.bc_frame_encode(type_, epoch, seq, _buf(body), len(body), out)
        if n < 0:
            raise ValueError("body too long")
        return bytes(out[:n])

    def decode_frame(self, enc: bytes) -> tuple[int, int, int, bytes] | int:
        """(type, epoch, seq, body) or a negative BC_ERR_* code."""
        t, e, s = C.c_uint8(), C.c_uint16(), C.c_uint16()
        body = (C.c_uint8 * 64)()
        n = self.lib.bc_frame_decode(_buf(enc), len(enc), C.byref(t), C.byref(e), C.byref(s), body)
        return n if n < 0 else (t.value, e.value, s.value, bytes(body[:n]))


class CCore:
    """The C bridge state machine behind the BridgeCore interface."""

    def __init__(
        self,
        config: BridgeConfig,
        boot_id: int,
        now_ms: int,
        tx: Callable[[bytes], None],
        on_actuate: Callable[[int], None] = lambda part_id: None,
        on_outputs: Callable[[bool, bool], None] = lambda reject, alarm: None,
        lib: C.CDLL | None = None,
    ) -> None:
        self.lib = lib or load()
        self.boot_id = boot_id & 0xFFFF
        self._state = C.create_string_buffer(self.lib.bridge_sizeof())
        self.outputs: tuple[bool, bool] = (False, False)

        def _tx(_ctx, buf, n):
            tx(C.string_at(buf, n))

        def _out(_ctx, reject, alarm):
            self.outputs = (bool(reject), bool(alarm))
            on_outputs(bool(reject), bool(alarm))

        def _act(_ctx, part_id):
            on_actuate(part_id)

        # Keep the callback objects alive as long as the state that points at them.
        self._io = _IO(_TX(_tx), _OUT(_out), _ACT(_act), None)
        self._cfg = _Config(config.failsafe_ms, config.pulse_ms, int(config.failsafe_reject))
        self.lib.bridge_init(self._state, C.byref(self._cfg), C.byref(self._io), self.boot_id,
                             now_ms & 0xFFFFFFFF)

    def feed(self, data: bytes, now_ms: int) -> None:
        if data:
            self.lib.bridge_rx(self._state, _buf(data), len(data), now_ms & 0xFFFFFFFF)

    def tick(self, now_ms: int) -> None:
        self.lib.bridge_tick(self._state, now_ms & 0xFFFFFFFF)

    def encoder_tick(self, now_ms: int) -> None:
        self.lib.bridge_encoder_tick(self._state, now_ms & 0xFFFFFFFF)

    @property
    def failsafe(self) -> bool:
        return bool(self.lib.bridge_flags(self._state) & 0x01)

    def stats(self) -> dict:
        v = (C.c_uint32 * 5)()
        self.lib.bridge_stats(self._state, v)
        return {
            "boot_id": self.boot_id, "failsafe": self.failsafe, "actuations": v[0], "passes": v[1],
            "rx_errors": v[2], "duplicates": v[3], "reject_out": self.outputs[0],
            "alarm_out": self.outputs[1],
        }
