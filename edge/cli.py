"""edge-inspect: inspect parts with an edge-inspect IR, decide, log, archive and signal the PLC.

    edge-inspect --config /etc/edge-inspect/config.toml          # the systemd service
    edge-inspect --model tile.xml --camera 0 --plc bridge:/dev/ttyUSB0
    edge-inspect --model tile.xml --video line.mkv --serial loop://
    edge-inspect --model tile.xml --images /srv/camera-drop --watch --audit-path audit.jsonl
    edge-inspect --config config.toml --check-config

Every config key is also a flag (see --help). One JSON record per part on stdout (unless
stdout = false) and in the audit log; a summary on stderr at the end. A part that cannot be
inspected in time is rejected fail-safe and says why. SIGTERM finishes the parts in flight and
flushes the logs; SIGHUP reloads the thresholds from the IR's metadata.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from .errors import EdgeError


def build_parser() -> argparse.ArgumentParser:
    from . import config

    ap = argparse.ArgumentParser(prog="edge-inspect", description="Inspect parts on the line with an edge-inspect IR.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    config.add_arguments(ap)
    return ap


def _stderr_line(data: bytes) -> None:
    try:
        sys.stderr.write("edge-inspect: audit-fallback: " + data.decode(errors="replace"))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def run(cfg, *, install_signals: bool = True) -> dict:
    from .archive import EvidenceArchive
    from .audit import AuditLog
    from .health import MetricsServer, Notifier
    from .model import AnomalyModel
    from .pipeline import Pipeline
    from .plc import PlcOutput
    from .sources import open_source

    if not cfg.model:
        raise EdgeError("no model: pass --model tile.xml (or set model in the config)")
    kind, value = cfg.source_kind()
    model = AnomalyModel(cfg.model, threads=cfg.threads, precision=cfg.precision, hint="THROUGHPUT")
    src = cfg.section("source")
    source = open_source(**{kind: value}, watch=src["watch"], width=src["width"], height=src["height"], fps=src["fps"],
                         exposure=src["exposure"], realtime=src["realtime"], reconnect_min_s=src["reconnect_min_s"],
                         reconnect_max_s=src["reconnect_max_s"], poll_s=src["poll_s"])
    pipeline: Pipeline | None = None
    pending_alarms: list = []

    def on_alarm(kind: str, message: str) -> None:
        if pipeline is not None:
            pipeline.alarm(kind, message)
        else:
            pending_alarms.append((kind, message))

    plc = audit = archive = metrics = None
    notifier = Notifier()
    try:
        plc = PlcOutput(cfg.plc, cfg.serial, on_alarm=on_alarm)
        if cfg["audit.path"]:
            a = cfg.section("audit")
            try:
                audit = AuditLog(a["path"], fsync_every=a["fsync_every"], fsync_interval_s=a["fsync_interval_s"],
                                 max_bytes=int(a["max_mb"] * (1 << 20)), keep=a["keep"], backlog=a["backlog"],
                                 on_alarm=on_alarm, fallback=_stderr_line)
            except OSError as err:
                raise EdgeError(f"audit log {a['path']} cannot be opened ({err.strerror}): check audit.path and its "
                                "permissions") from None
        if cfg["archive.dir"]:
            ar = cfg.section("archive")
            try:
                archive = EvidenceArchive(ar["dir"], quota_bytes=int(ar["quota_mb"] * (1 << 20)), pass_every=ar["pass_every"],
                                          jpeg_quality=ar["jpeg_quality"], on_alarm=on_alarm)
            except OSError as err:
                raise EdgeError(f"evidence archive {ar['dir']} cannot be created ({err.strerror})") from None
        pipeline = Pipeline(cfg, model, source, plc=plc, audit=audit, archive=archive, notifier=notifier,
                            out=sys.stdout if cfg.stdout else None)
        for kind_, message in pending_alarms:
            pipeline.alarm(kind_, message)
        if cfg.metrics_port:
            metrics = MetricsServer(cfg.metrics_port, pipeline.metrics)
        if install_signals:
            signal.signal(signal.SIGTERM, lambda *_: pipeline.request_stop())
            signal.signal(signal.SIGINT, lambda *_: pipeline.request_stop())
            signal.signal(signal.SIGHUP, lambda *_: pipeline.reload_requested.set())
        summary = pipeline.run()
        if plc is not None and not plc.flush(5.0):
            pipeline.log("PLC link: not every decision was confirmed within 5 s of the end")
        if pipeline.fatal is not None:
            err = pipeline.fatal
            raise err if isinstance(err, EdgeError) else EdgeError(f"{type(err).__name__}: {err}")
    finally:
        if metrics is not None:
            metrics.close()
        if archive is not None:
            archive.close()
        if audit is not None:
            audit.close(retry_s=2.0)
        if plc is not None:
            plc.close()
        source.close()
        notifier.close()
    if audit is not None:
        summary["audit"] = audit.stats()  # after the final flush: what was written, and what was not
    if plc is not None:
        summary["plc"] = plc.stats()
    return summary


def main(argv: list[str] | None = None) -> int:
    from . import config

    args = build_parser().parse_args(argv)
    try:
        cfg = config.load(args)
        if args.check_config:
            notes = config.validate(cfg)
            from .model import read_ir
            from .metadata import read_info
            from .decision import check_nfa_ready

            info = read_info(read_ir(cfg.model), cfg.model)
            why = check_nfa_ready(cfg["decision"] or info.decision_rule, info.latent_channels, len(info.latent_channels))
            if why:
                raise EdgeError(f"model {cfg.model}: {why}")
            sys.stdout.write(config.dump(cfg))
            notes.append(f"model: {cfg.model} (input {info.input_width}x{info.input_height}, image_threshold "
                         f"{info.image_threshold:.6g}, nfa_epsilon {info.nfa_epsilon:g}, latent_channels {info.latent_channels}, "
                         f"decision rule {cfg['decision'] or info.decision_rule})")
            for n in notes:
                print(f"edge-inspect: {n}", file=sys.stderr)
            print("edge-inspect: configuration OK", file=sys.stderr)
            return 0
        summary = run(cfg)
    except EdgeError as err:
        print(f"edge-inspect: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    print("edge-inspect: " + json.dumps(summary, default=str), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
