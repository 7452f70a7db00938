"""edge-inspect: inspect frames with an edge-inspect IR, decide, log and signal the PLC.

    edge-inspect --model tile.xml --camera 0 [--serial /dev/ttyUSB0]
    edge-inspect --model tile.xml --video line.mp4 --serial loop://
    edge-inspect --model tile.xml --images /srv/camera-drop

One JSON line per frame on stdout; a summary on stderr at the end. A frame that cannot be
inspected is rejected fail-safe and says why.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .errors import EdgeError


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edge-inspect", description="Inspect parts on the line with an edge-inspect IR.")
    ap.add_argument("--model", required=True, help="OpenVINO IR (.xml) written by edge-calibrate")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--camera", help="camera index or device path (e.g. 0 or /dev/video0)")
    src.add_argument("--video", help="video file")
    src.add_argument("--images", help="folder of images, inspected in name order")
    ap.add_argument("--serial", help="PLC line: a serial port or pyserial URL (e.g. /dev/ttyUSB0, loop://)")
    ap.add_argument("--threshold", type=float, help="override the image threshold stored in the IR")
    ap.add_argument("--threads", type=int, default=0, help="inference threads (default: all cores)")
    ap.add_argument("--precision", default="f32", help="OpenVINO inference precision hint (default f32)")
    ap.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: until the source ends)")
    return ap


def run(args: argparse.Namespace) -> dict:
    from .decision import REJECT, Decision, verdict_for_score
    from .model import AnomalyModel
    from .preprocess import prepare
    from .sources import open_source

    model = AnomalyModel(args.model, threads=args.threads, precision=args.precision)
    threshold = model.info.image_threshold if args.threshold is None else args.threshold
    link = None
    if args.serial:
        from firmware_bridge.line import LineLink, LinkError

        try:
            link = LineLink(args.serial)
        except LinkError as err:
            raise EdgeError(str(err)) from None
    counts = {"frames": 0, "rejects": 0, "failsafe": 0}
    latencies = []
    try:
        with open_source(video=args.video, images=args.images, camera=args.camera) as source:
            for frame in source:
                t0 = time.perf_counter()
                score = None
                if frame.error is None:
                    try:
                        result = model.infer(prepare(frame.image, model.input_size))
                        score = result.score
                        verdict, reason = verdict_for_score(score, threshold)
                    except EdgeError as err:
                        verdict, reason = REJECT, f"failsafe: {err}"
                else:
                    verdict, reason = REJECT, f"failsafe: {frame.error}"
                latency = (time.perf_counter() - t0) * 1e3
                decision = Decision(frame.id, frame.origin, frame.captured_at, time.time(), verdict, reason,
                                    score, threshold, latency, model.model_hash)
                if link is not None:
                    from firmware_bridge.line import LinkError

                    try:
                        link.send(frame.id, decision.reject, score if score is not None else float("nan"))
                    except LinkError as err:
                        raise EdgeError(str(err)) from None
                print(json.dumps(decision.record()), flush=True)
                counts["frames"] += 1
                counts["rejects"] += decision.reject
                counts["failsafe"] += reason.startswith("failsafe")
                latencies.append(latency)
                if args.max_frames and counts["frames"] >= args.max_frames:
                    break
    finally:
        if link is not None:
            link.close()
    if latencies:
        ordered = sorted(latencies)
        counts["latency_p50_ms"] = round(ordered[len(ordered) // 2], 2)
        counts["latency_p99_ms"] = round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2)
    counts["inference_precision"] = model.inference_precision
    return counts


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except EdgeError as err:
        print(f"edge-inspect: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    print("edge-inspect: " + json.dumps(summary), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
