"""FLOPs per image of each torch model in the pipeline, counted by torch itself.

`torch.utils.flop_counter.FlopCounterMode` counts the matmuls and convolutions of one forward
pass at the input size the service sends (NIMA 299 px, CLIP 224 px, the emotion CNN one 48 px
face). Element-wise work, image decoding, resizing, BRISQUE's NSS features and Haar face
detection are not counted, so the effective GFLOP/s derived from these is a lower bound on
the arithmetic the service really does. Run as a child process
(`python -m benchmarks.flops OUT.json`) with BENTOML_HOME pointing at the harness's store.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def count(module: Any, *args: Any, **kwargs: Any) -> float:
    """FLOPs of one forward of `module` (batch of one)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(*args, **kwargs)
    return float(counter.get_total_flops())


def model_flops() -> dict[str, float]:
    """FLOPs per image of every torch model, loaded from the model store like the runners."""
    import torch
    from deepface.models.demography.pytorch.Emotion import EmotionModel
    from transformers import CLIPVisionModelWithProjection
    from transformers.utils import logging as hf_logging

    from festora.models import CLIP, NIMA_AESTHETIC, NIMA_TECHNICAL, resolve
    from festora.preprocess import CLIP_SIZE, NIMA_SIZE
    from runners.nima import build_nima, load_nima_weights

    hf_logging.set_verbosity_error()
    found: dict[str, float] = {}
    for spec in (NIMA_TECHNICAL, NIMA_AESTHETIC):
        _, prov = resolve(spec)
        net = build_nima(spec)
        load_nima_weights(net, prov.path / spec.weights_file)
        found[spec.key] = count(net.eval(), torch.rand(1, 3, NIMA_SIZE, NIMA_SIZE))
    _, prov = resolve(CLIP)
    clip = CLIPVisionModelWithProjection.from_pretrained(prov.path).eval()
    found["clip"] = count(clip, pixel_values=torch.rand(1, 3, CLIP_SIZE, CLIP_SIZE))
    found["emotion_per_face"] = count(EmotionModel().eval(), torch.rand(1, 1, 48, 48))
    return found


def main() -> None:
    Path(sys.argv[1]).write_text(json.dumps(model_flops(), indent=2))


if __name__ == "__main__":
    main()
