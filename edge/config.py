"""edge-inspect configuration: one TOML file, every key overridable on the command line.

The file has a few top-level keys and the sections ``[source]``, ``[audit]``, ``[archive]``
and ``[health]``. Every key ``section.name`` is also the command-line flag ``--section-name``
(top-level keys: ``--name``), with underscores as dashes; a few short aliases exist
(``--camera``, ``--video``, ``--images``, ``--stream``, ``--genicam``, ``--watch``). Precedence:
command line > file > default. ``edge-inspect --check-config`` validates the merged result and
exits.
"""

from __future__ import annotations

import argparse
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import EdgeError


class ConfigError(EdgeError):
    """The configuration file or a command-line override is invalid."""


DEFAULT_PATH = "/etc/edge-inspect/config.toml"


@dataclass(frozen=True)
class Key:
    section: str  # "" for top-level
    name: str
    type: type
    default: Any
    help: str
    choices: tuple = ()
    minimum: float | None = None
    alias: tuple[str, ...] = ()

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}" if self.section else self.name

    @property
    def flag(self) -> str:
        return "--" + self.dotted.replace(".", "-").replace("_", "-")

    @property
    def dest(self) -> str:
        return self.dotted.replace(".", "__")


SCHEMA: tuple[Key, ...] = (
    # top level
    Key("", "model", str, "", "OpenVINO IR (.xml) written by edge-calibrate"),
    Key("", "decision", str, "", "reject rule: nfa (any region with log10 NFA < epsilon), score (image score >= "
        "threshold) or both (either fires); empty: the rule edge-calibrate validated and stored in the IR",
        choices=("", "nfa", "score", "both")),
    Key("", "threshold", float, math.nan, "override the image threshold stored in the IR (nan: use the IR's)"),
    Key("", "nfa_epsilon", float, math.nan, "override the NFA epsilon stored in the IR (nan: use the IR's, default 0)"),
    Key("", "nfa_exact_min", bool, False, "record the exact minimum log10 NFA of passing parts too (builds every "
        "tree: slower); off: a pass whose trees were skipped records the proven bound log10_nfa_bound"),
    Key("", "plc", str, "none", "PLC link URL: bridge:/dev/ttyUSB0, modbus-rtu:/dev/ttyUSB0?unit=1&coil=0, or none"),
    Key("", "serial", str, "", "simple checksummed decision line on a serial port or pyserial URL (instead of --plc)"),
    Key("", "threads", int, 0, "inference threads (0: all cores this process may use)", minimum=0),
    Key("", "precision", str, "f32", "OpenVINO inference precision hint (flow outputs need f32)"),
    Key("", "infer_requests", int, 0, "parallel OpenVINO infer requests (0: sized for the cores)", minimum=0),
    Key("", "deadline_ms", float, 2000.0, "a part not decided this long after capture is rejected fail-safe", minimum=1),
    Key("", "queue_size", int, 8, "bound of each stage queue; a frame that finds it full is rejected fail-safe", minimum=1),
    Key("", "max_frames", int, 0, "stop after N frames (0: until the source ends or SIGTERM)", minimum=0),
    Key("", "metrics_port", int, 0, "serve Prometheus metrics on 127.0.0.1:PORT (0: off)", minimum=0),
    Key("", "stdout", bool, True, "also print every decision record on stdout"),
    Key("", "reject_travel_ms", float, 0.0, "camera-to-diverter travel time: the PLC actuates this long after capture "
        "(0: at once)", minimum=0),
    Key("", "top_regions", int, 3, "regions named in each decision record", minimum=0),
    # source
    Key("source", "camera", str, "", "camera index or device path (e.g. 0 or /dev/video0)", alias=("--camera",)),
    Key("source", "video", str, "", "video file", alias=("--video",)),
    Key("source", "images", str, "", "folder of images, in name order (or arrival order with --watch)", alias=("--images",)),
    Key("source", "stream", str, "", "RTSP/HTTP stream URL", alias=("--stream",)),
    Key("source", "genicam", str, "", "GenICam producer .cti file (needs the harvesters package)", alias=("--genicam",)),
    Key("source", "watch", bool, False, "with images: keep watching the folder for new files", alias=("--watch",)),
    Key("source", "color", str, "bgr", "what the camera must deliver: bgr (a grayscale frame is rejected fail-safe), "
        "gray (model trained on grayscale parts) or any", choices=("bgr", "gray", "any")),
    Key("source", "width", int, 0, "camera frame width (0: leave as is)", minimum=0),
    Key("source", "height", int, 0, "camera frame height (0: leave as is)", minimum=0),
    Key("source", "fps", float, 0.0, "camera frame rate (0: leave as is)", minimum=0),
    Key("source", "exposure", float, 0.0, "camera exposure in the driver's units (0: leave as is)"),
    Key("source", "part_rate_hz", float, 0.0, "nominal part rate: while a live source is down, one fail-safe reject "
        "per 1/rate s (0: use fps; if that is 0 too, one per stall timeout)", minimum=0),
    Key("source", "stall_timeout_s", float, 2.0, "no frame for this long: the source has stalled", minimum=0.01),
    Key("source", "reconnect_min_s", float, 0.5, "first reconnect back-off", minimum=0),
    Key("source", "reconnect_max_s", float, 30.0, "longest reconnect back-off", minimum=0),
    Key("source", "realtime", bool, False, "video: replay at the file's frame rate (a recorded line)"),
    Key("source", "poll_s", float, 0.2, "watch mode: folder poll interval", minimum=0.01),
    # audit
    Key("audit", "path", str, "", "JSON-lines audit log file (empty: none)"),
    Key("audit", "fsync_every", int, 64, "fsync after this many records", minimum=1),
    Key("audit", "fsync_interval_s", float, 1.0, "fsync at least this often", minimum=0),
    Key("audit", "max_mb", float, 64.0, "rotate the log at this size", minimum=0.001),
    Key("audit", "keep", int, 20, "rotated logs to keep", minimum=1),
    Key("audit", "backlog", int, 100_000, "records held in memory while the log disk is failing", minimum=1),
    # archive
    Key("archive", "dir", str, "", "evidence archive folder (empty: none)"),
    Key("archive", "quota_mb", float, 1024.0, "archive disk quota; oldest evidence is deleted first", minimum=0.001),
    Key("archive", "pass_every", int, 100, "archive every Nth passed frame (0: none)", minimum=0),
    Key("archive", "jpeg_quality", int, 90, "JPEG quality of archived frames", minimum=1),
    # health
    Key("health", "status_interval_s", float, 5.0, "systemd STATUS and stderr summary interval", minimum=0.1),
    Key("health", "watchdog_stale_s", float, 0.0, "no WATCHDOG ping when no frame flowed for this long "
        "(0: half the systemd watchdog interval, or 10 s)", minimum=0),
)

KEYS = {k.dotted: k for k in SCHEMA}
SECTIONS = sorted({k.section for k in SCHEMA if k.section})
SOURCE_KINDS = ("camera", "video", "images", "stream", "genicam")


class Config(dict):
    """Merged configuration: ``cfg["audit.path"]``; ``cfg.origin[key]`` says where a value came from."""

    origin: dict[str, str]

    def __getattr__(self, name: str):  # cfg.model, cfg.deadline_ms for top-level keys
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def section(self, name: str) -> dict:
        return {k.name: self[k.dotted] for k in SCHEMA if k.section == name}

    def source_kind(self) -> tuple[str, str]:
        given = [(k, self[f"source.{k}"]) for k in SOURCE_KINDS if self[f"source.{k}"]]
        if len(given) != 1:
            raise ConfigError("give exactly one source: --camera N, --video FILE, --images DIR, --stream URL or "
                              f"--genicam CTI (or one of them under [source] in the config); got {len(given)}")
        return given[0]


def _coerce(key: Key, value: Any, where: str) -> Any:
    if key.type is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{where}: {key.dotted} = {value!r} is not a boolean (true/false)")
    if key.type is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {key.dotted} = {value!r} is not a number")
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {key.dotted} = {value!r} is not a number") from None
    elif key.type is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{where}: {key.dotted} = {value!r} is not an integer")
        try:
            out = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {key.dotted} = {value!r} is not an integer") from None
    else:
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ConfigError(f"{where}: {key.dotted} = {value!r} is not a string")
        out = str(value)
    if key.choices and out not in key.choices:
        named = ", ".join(c for c in key.choices if c)
        empty = ' or "" (the value stored in the IR)' if "" in key.choices else ""
        raise ConfigError(f"{where}: {key.dotted} = {out!r} is not one of {named}{empty}")
    if key.minimum is not None and not (out >= key.minimum):
        if not (key.type is float and math.isnan(out) and key.default != key.default):
            raise ConfigError(f"{where}: {key.dotted} = {out!r} must be >= {key.minimum:g}")
    return out


def read_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config into {dotted key: value}, refusing unknown sections and keys."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable (permission denied)") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML ({err})") from None
    out: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, dict):
            if name not in SECTIONS:
                raise ConfigError(f"config file {path}: unknown section [{name}]; known: {', '.join(SECTIONS)}")
            for sub, v in value.items():
                dotted = f"{name}.{sub}"
                if dotted not in KEYS:
                    known = ", ".join(k.name for k in SCHEMA if k.section == name)
                    raise ConfigError(f"config file {path}: unknown key {dotted!r}; known in [{name}]: {known}")
                out[dotted] = _coerce(KEYS[dotted], v, f"config file {path}")
        else:
            if name not in KEYS:
                raise ConfigError(f"config file {path}: unknown key {name!r}; top-level keys: "
                                  f"{', '.join(k.name for k in SCHEMA if not k.section)}")
            out[name] = _coerce(KEYS[name], value, f"config file {path}")
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """One flag per key (default None: 'not given'), plus --config and --check-config."""
    ap.add_argument("--config", help=f"TOML configuration file (installed: {DEFAULT_PATH})")
    ap.add_argument("--check-config", action="store_true", help="validate the configuration, print it and exit")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key in SCHEMA:
        group = groups.setdefault(key.section, ap.add_argument_group(f"[{key.section}]" if key.section else "general"))
        flags = [key.flag, *key.alias]
        if key.type is bool:
            group.add_argument(*flags, dest=key.dest, nargs="?", const="true", default=None, metavar="BOOL",
                               help=f"{key.help} (default {str(key.default).lower()})")
        else:
            group.add_argument(*flags, dest=key.dest, default=None, help=f"{key.help} (default {key.default!r})")


def load(args: argparse.Namespace) -> Config:
    """Defaults < config file < command line."""
    cfg = Config({k.dotted: k.default for k in SCHEMA})
    cfg.origin = {k.dotted: "default" for k in SCHEMA}
    if getattr(args, "config", None):
        for name, value in read_file(args.config).items():
            cfg[name] = value
            cfg.origin[name] = str(args.config)
    for key in SCHEMA:
        value = getattr(args, key.dest, None)
        if value is not None:
            cfg[key.dotted] = _coerce(key, value, f"command line {key.flag}")
            cfg.origin[key.dotted] = "command line"
    if cfg["source.reconnect_max_s"] < cfg["source.reconnect_min_s"]:
        raise ConfigError("source.reconnect_max_s must be >= source.reconnect_min_s")
    if cfg["plc"] not in ("", "none") and cfg["serial"]:
        raise ConfigError("give either --plc URL or --serial PORT, not both")
    return cfg


def validate(cfg: Config) -> list[str]:
    """Deeper checks for --check-config: the model, the source and the writable paths. Returns notes."""
    notes = []
    if not cfg.model:
        raise ConfigError("no model: set model = \"/opt/edge-inspect/model/tile.xml\" in the config or pass --model")
    kind, value = cfg.source_kind()
    if kind == "video" and not Path(value).is_file():
        raise ConfigError(f"video file {value} not found")
    if kind == "images" and not Path(value).is_dir():
        raise ConfigError(f"image folder {value} not found")
    for key in ("audit.path",):
        if cfg[key]:
            parent = Path(cfg[key]).parent
            if not parent.is_dir():
                raise ConfigError(f"{key}: folder {parent} does not exist")
    if cfg["archive.dir"] and Path(cfg["archive.dir"]).exists() and not Path(cfg["archive.dir"]).is_dir():
        raise ConfigError(f"archive.dir {cfg['archive.dir']} is not a folder")
    if cfg.plc not in ("", "none"):
        scheme = cfg.plc.partition(":")[0]
        if scheme not in ("bridge", "modbus-rtu"):
            raise ConfigError(f"plc = {cfg.plc!r}: unknown scheme {scheme!r}; use bridge:, modbus-rtu: or none")
    notes.append(f"source: {kind} {value}")
    return notes


def dump(cfg: Config) -> str:
    """The merged configuration as TOML, with where each value came from."""
    lines = []
    for section in ["", *SECTIONS]:
        if section:
            lines.append(f"\n[{section}]")
        for key in (k for k in SCHEMA if k.section == section):
            value = cfg[key.dotted]
            if isinstance(value, bool):
                text = str(value).lower()
            elif isinstance(value, float) and math.isnan(value):
                text = "nan"
            elif isinstance(value, (int, float)):
                text = repr(value)
            else:
                text = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
            lines.append(f"{key.name} = {text}  # {cfg.origin[key.dotted]}")
    return "\n".join(lines).lstrip() + "\n"
