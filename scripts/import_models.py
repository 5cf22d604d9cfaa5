"""Put every runner's weights into the BentoML model store. Idempotent.

    python -m scripts.import_models                   # real weights (needs the internet)
    python -m scripts.import_models --random-init     # offline: same models, random weights
    WEIGHTS=random-init python -m scripts.import_models

Real weights: CLIP from the Hugging Face hub (CLIP_MODEL_NAME, via transformers), NIMA from
pyiqa's release files, the emotion CNN from DeepFace's release, the BRISQUE SVM shipped in
the `brisque` package, and MediaPipe's face detector, face mesh and iris models (.tflite) from
the `mediapipe==0.10.21` wheel on PyPI (downloaded with `pip download --no-deps`, its sha256
checked, the three files extracted; mediapipe itself is never installed). Files already on
this machine are used before any download: the folder given with --weights-dir (for the faces:
the three extracted .tflite files), the Hugging Face cache, $TORCH_HOME/hub/pyiqa and
$DEEPFACE_HOME/.deepface/weights. Without a network, real mode stops before doing anything and
names what it could not reach.

--random-init builds the same architectures at full size from a fixed seed and saves them in
the real file formats (CLIP: save_pretrained safetensors + a CLIPImageProcessor config + a
tokenizer; NIMA: `{'params': state_dict}`; emotion: the state dict), so they load through the
runners' real path and cost what real weights cost; their scores mean nothing. BRISQUE and
the MediaPipe face models stay real in every mode. CLIP's tokenizer vocabulary (48,894 learnt
BPE merges) exists only on the hub, so the random-init tokenizer is transformers' own
`CLIPTokenizer` pipeline (normaliser, pre-tokenizer, start/end tokens) over CLIP's byte-level
alphabet with no merges: every text tokenizes, one token per character, at the same ids as in
the real vocabulary, and the start and end tokens
sit at the ids `CLIPConfig()` expects (see `offline_clip_tokenizer`).

CLIP is stored as one entry holding both towers, the tokenizer and the logit scale (metadata
`logit_scale`), so the image and text runners always read the same checkpoint; each tower has
its own OpenVINO IR.

A model already stored with the same source (and weights kind) is skipped; --force imports a
new version anyway. Every model carries the labels weights, source, license and sha256.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from festora.models import (
    BRISQUE,
    CLIP,
    CLIP_TEXT_IR_FILE,
    CLIP_TOKENIZER_FILE,
    EMOTION,
    FACE_MODEL_FILES,
    FACES,
    LABEL_SOURCE,
    LABEL_WEIGHTS,
    NIMA_AESTHETIC,
    NIMA_TECHNICAL,
    SPECS,
    WEIGHTS_MODES,
    ModelSpec,
    Weights,
    model_labels,
    sha256_file,
)
from festora.preprocess import NIMA_SIZE, clip_input, nima_input
from runners.serving.int8 import (
    Agreement,
    Prepare,
    embeddings_agree,
    export_int8,
    sample_photos,
    scores_agree,
)
from runners.serving.openvino_ir import IR_FILE, export_ir, save_ir

if TYPE_CHECKING:
    import bentoml
    from bentoml._internal.models.model import ModelStore

Log = Callable[[str], None]

PYIQA_RELEASE = "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights"
PYIQA_HF = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main"
# The URLs deepface 0.0.103 downloads its emotion weights from (in its order).
DEEPFACE_EMOTION_URLS = (
    "https://github.com/serengil/deepface_models/releases/download/v1.0/"
    "facial_expression_model_weights.pth",
    "https://huggingface.co/serengil/deepface/resolve/main/facial_expression_model_weights.pth",
)
# The one mediapipe release that still ships its face models (later ones ship none); the
# wheel's and each extracted file's sha256 as published on PyPI on 2025-01-31.
MEDIAPIPE_VERSION = "0.10.21"
MEDIAPIPE_WHEEL = f"mediapipe-{MEDIAPIPE_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
MEDIAPIPE_WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
MEDIAPIPE_MEMBERS = {
    "face_detection_full_range_sparse.tflite": "mediapipe/modules/face_detection/",
    "face_landmark.tflite": "mediapipe/modules/face_landmark/",
    "iris_landmark.tflite": "mediapipe/modules/iris_landmark/",
}
FACE_FILE_SHA256 = {
    "face_detection_full_range_sparse.tflite": (
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1"
    ),
    "face_landmark.tflite": "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
    "iris_landmark.tflite": "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
}
NIMA_METRIC = {NIMA_TECHNICAL.key: "nima-koniq", NIMA_AESTHETIC.key: "nima"}
HTTP_TIMEOUT = (5.0, 60.0)  # connect, read
# What a local CLIP folder must hold: the model, its image processor and its tokenizer (a hub
# snapshot has all three; a model's save_pretrained alone lacks the other two).
CLIP_FOLDER_FILES = ("config.json", "preprocessor_config.json", "tokenizer_config.json")


class Unreachable(RuntimeError):
    """Real weights were asked for, are not on this machine, and their source is unreachable."""


class ImportFailed(RuntimeError):
    """A model could not be imported (a file that is not what it should be, a failed export):
    the message names the model, its source and the first line of the cause."""


@dataclass
class Options:
    weights: Weights = "real"
    seed: int = 0
    force: bool = False
    weights_dir: Path | None = None
    clip_model_name: str = "openai/clip-vit-base-patch32"
    int8: bool = True  # quantise NIMA and CLIP's image tower (runners.serving.int8)
    calibration_photos: Path | None = None  # None: scikit-learn's sample photos
    model_store: ModelStore | None = None  # None: the active BENTOML_HOME store
    log: Log = field(default=lambda line: print(line, flush=True))


@dataclass
class Plan:
    """What importing one model means: its source (the idempotency key) and where from."""

    spec: ModelSpec
    weights: Weights
    source: str
    urls: tuple[str, ...] = ()  # real: download from the first that works
    local: Path | None = None  # real: already on this machine


@dataclass
class Result:
    key: str
    tag: str
    weights: Weights
    source: str
    sha256: str
    imported: bool  # False: already present
    seconds: float


# ---------------------------------------------------------------------------------- planning


def _first_file(*candidates: Path | None) -> Path | None:
    return next((c for c in candidates if c is not None and c.is_file()), None)


def _hf_cached(model_name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model_name, "config.json"), str)


def plan(spec: ModelSpec, opts: Options) -> Plan:
    # The SVM ships with its package; the face models are real and small: always real.
    mode = "real" if spec in (BRISQUE, FACES) else opts.weights
    wdir = opts.weights_dir
    if mode == "random-init":
        arch = {
            CLIP.key: "transformers CLIPModel(CLIPConfig())",
            EMOTION.key: "deepface EmotionModel",
        }.get(spec.key) or f"pyiqa {NIMA_METRIC[spec.key]}"
        return Plan(spec, mode, f"random-init:seed={opts.seed}:{arch}")
    if spec is CLIP:
        local_dir = wdir / "clip" if wdir else None
        local = local_dir if local_dir and local_dir.is_dir() else None
        return Plan(
            spec,
            mode,
            f"hf:{opts.clip_model_name}",
            urls=(f"https://huggingface.co/api/models/{opts.clip_model_name}",),
            local=local,
        )
    if spec is BRISQUE:
        from importlib.metadata import version

        return Plan(spec, mode, f"pypi:brisque=={version('brisque')}")
    if spec is FACES:
        local = wdir if wdir and all((wdir / f).is_file() for f in FACE_MODEL_FILES) else None
        return Plan(spec, mode, f"pypi:mediapipe=={MEDIAPIPE_VERSION}", local=local)
    name = spec.weights_file
    if spec is EMOTION:
        home = Path(os.environ.get("DEEPFACE_HOME") or Path.home())
        local = _first_file(wdir / name if wdir else None, home / ".deepface" / "weights" / name)
        return Plan(spec, mode, f"deepface:{name}", urls=DEEPFACE_EMOTION_URLS, local=local)
    import torch.hub

    pyiqa_cache = Path(torch.hub.get_dir()) / "pyiqa" / name
    local = _first_file(wdir / name if wdir else None, pyiqa_cache)
    return Plan(
        spec,
        mode,
        f"pyiqa:{name}",
        urls=(f"{PYIQA_RELEASE}/{name}", f"{PYIQA_HF}/{name}"),
        local=local,
    )


def is_complete(spec: ModelSpec, model: bentoml.Model) -> bool:
    """Whether a stored version holds everything today's runners read (one imported before
    OpenVINO IRs, or before the CLIP text tower's files, is not)."""
    folder = Path(model.path)
    if not all((folder / name).is_file() for name in REQUIRED_FILES.get(spec.key, ())):
        return False
    if spec in QUANTISED and "int8" not in model.info.metadata:
        return False
    return spec is not CLIP or "logit_scale" in model.info.metadata


def find_present(p: Plan, opts: Options) -> bentoml.Model | None:
    """The newest complete stored version of this model with the same source and weights kind
    (an incomplete one, see `is_complete`, is imported again)."""
    import bentoml

    kwargs = {"_model_store": opts.model_store} if opts.model_store is not None else {}
    try:
        models = bentoml.models.list(p.spec.store_name, **kwargs)
    except bentoml.exceptions.NotFound:
        return None
    same = [
        m
        for m in models
        if m.info.labels.get(LABEL_SOURCE) == p.source
        and m.info.labels.get(LABEL_WEIGHTS) == p.weights
        and is_complete(p.spec, m)
    ]
    return max(same, key=lambda m: m.info.creation_time) if same else None


def _reachable(url: str) -> str | None:
    """None if `url` answers, else why not."""
    import requests

    try:
        response = requests.head(url, timeout=HTTP_TIMEOUT[0], allow_redirects=True)
    except requests.RequestException as exc:
        dns = "NameResolution" in str(exc) or "Name or service not known" in str(exc)
        return type(exc).__name__ + (" (DNS lookup failed)" if dns else "")
    if response.status_code >= 400 and response.status_code != 405:
        return f"HTTP {response.status_code}"
    return None


def preflight(plans: Sequence[Plan], opts: Options) -> list[str]:
    """Problems that would stop a real import, found before anything is fetched."""
    problems = []
    for p in plans:
        if p.spec is CLIP and p.weights == "real" and p.local is not None:
            missing = [f for f in CLIP_FOLDER_FILES if not (p.local / f).is_file()]
            if missing:
                problems.append(
                    f"clip: {p.local} has no {' or '.join(missing)}; give it a hub snapshot "
                    f"(hf download {opts.clip_model_name} --local-dir {p.local})"
                )
            continue
        if p.weights != "real" or p.local is not None or not p.urls:
            continue
        if p.spec is CLIP:
            if _hf_cached(opts.clip_model_name):
                continue
            if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
                problems.append(
                    f"{p.spec.key}: HF_HUB_OFFLINE is set and {opts.clip_model_name} is not "
                    "in the Hugging Face cache"
                )
                continue
        reasons = [r for r in (_reachable(u) for u in p.urls) if r is not None]
        if len(reasons) == len(p.urls):  # none of its sources answers
            problems.append(f"{p.spec.key}: cannot reach {' or '.join(p.urls)} ({reasons[0]})")
    return problems


# ----------------------------------------------------------------------------------- staging


def _download(urls: Sequence[str], dest: Path, log: Log) -> str:
    """Fetch the first URL that works into `dest`, with a progress bar; returns the URL."""
    import requests
    from tqdm import tqdm

    errors = []
    for url in urls:
        log(f"    downloading {url}")
        try:
            with requests.get(url, stream=True, timeout=HTTP_TIMEOUT) as response:
                response.raise_for_status()
                if "text/html" in response.headers.get("content-type", ""):
                    raise ValueError("got an HTML page, not a weights file")
                total = int(response.headers.get("content-length") or 0) or None
                with (
                    open(dest, "wb") as f,
                    tqdm(
                        total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr
                    ) as bar,
                ):
                    for block in response.iter_content(chunk_size=1 << 20):
                        f.write(block)
                        bar.update(len(block))
            return url
        except (requests.RequestException, ValueError) as exc:
            errors.append(f"{url}: {exc}")
            dest.unlink(missing_ok=True)
    raise Unreachable("; ".join(errors))


def _real_file(p: Plan, dest: Path, log: Log) -> dict[str, Any]:
    if p.local is not None:
        log(f"    using {p.local}")
        shutil.copyfile(p.local, dest)
        return {"origin": str(p.local)}
    return {"url": _download(p.urls, dest, log)}


def offline_clip_tokenizer(config: Any) -> Any:
    """A CLIP tokenizer built without the hub, for random-init weights: transformers'
    `CLIPTokenizer` (its normaliser, pre-tokenizer and start/end post-processor) over CLIP's
    byte-level alphabet, at the ids the real vocabulary gives it (each byte's symbol, then
    the symbol with CLIP's end-of-word suffix "</w>"), with no merges (those are learnt data
    only the hub has), and the start and end tokens at the text config's bos/eos ids."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = {symbol: i for i, symbol in enumerate(symbols)}
    vocab.update({f"{symbol}</w>": len(symbols) + i for i, symbol in enumerate(symbols)})
    vocab["<|startoftext|>"] = int(config.bos_token_id)
    vocab["<|endoftext|>"] = int(config.eos_token_id)
    return CLIPTokenizer(
        vocab=vocab, merges=[], model_max_length=int(config.max_position_embeddings)
    )


def _check_tokenizer(tokenizer: Any, config: Any) -> None:
    """The tokenizer belongs to this text tower: every id it can produce has an embedding."""
    highest = max(tokenizer.get_vocab().values())
    if highest >= config.vocab_size:
        raise ValueError(
            f"the tokenizer's ids go up to {highest}, the text tower has only "
            f"{config.vocab_size} token embeddings: not the same checkpoint"
        )


def _stage_clip(p: Plan, out: Path, opts: Options) -> dict[str, Any]:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    from runners.clip import uint8_forward as uint8_clip

    if p.weights == "random-init":
        opts.log("    building CLIPModel(CLIPConfig()) (ViT-B/32 layout, ~151 M parameters)")
        torch.manual_seed(opts.seed)
        model = CLIPModel(CLIPConfig())
        processor = CLIPImageProcessor()  # its defaults are OpenAI CLIP's 224 px preprocessing
        tokenizer = offline_clip_tokenizer(model.config.text_config)
        meta: dict[str, Any] = {"model_id": "random-init", "seed": opts.seed}
    else:
        source = str(p.local) if p.local is not None else opts.clip_model_name
        opts.log(f"    loading {source} with transformers")
        model = CLIPModel.from_pretrained(source)
        processor = CLIPImageProcessor.from_pretrained(source)
        tokenizer = CLIPTokenizer.from_pretrained(source)
        meta = {"model_id": opts.clip_model_name}
        revision = getattr(model.config, "_commit_hash", None)
        if revision:
            meta["revision"] = revision
    text_config = model.config.text_config
    _check_tokenizer(tokenizer, text_config)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta["projection_dim"] = int(model.config.projection_dim)
    size = int(processor.crop_size["height"])  # 224 for ViT-B/32, 336 for ViT-L/14-336
    meta["input_size"] = size
    meta["text_context_length"] = int(text_config.max_position_embeddings)
    # what CLIPModel multiplies cosine similarities by for logits_per_image
    meta["logit_scale"] = float(model.logit_scale.detach().exp())
    del model
    _export_openvino(uint8_clip(_tower(out, "vision"), processor), size, out, opts)
    meta["int8"] = _export_int8(
        out, lambda rgb: clip_input(rgb, size), embeddings_agree, opts, transformer=True
    )
    _export_text_openvino(out, meta["text_context_length"], tokenizer.eos_token_id, opts)
    return meta


def _export_text_openvino(out: Path, context_length: int, end_of_text: int, opts: Options) -> None:
    import openvino as ov
    import torch

    from runners.clip_text import token_forward

    opts.log("    exporting the text tower's OpenVINO IR (tracing: ~5 s)")
    example = torch.full((2, context_length), end_of_text, dtype=torch.int64)
    shape = ov.PartialShape([-1, -1])  # any batch, any length up to the context
    save_ir(token_forward(_tower(out, "text")), example, shape, out / CLIP_TEXT_IR_FILE)


def _tower(out: Path, which: str) -> Any:
    """One tower of the saved model and its projection, as the torch runners load it."""
    from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection
    from transformers.utils import logging as hf_logging

    cls = CLIPVisionModelWithProjection if which == "vision" else CLIPTextModelWithProjection
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the other tower's weights are reported as unexpected
    try:
        return cls.from_pretrained(out)
    finally:
        hf_logging.set_verbosity(verbosity)


def _export_openvino(forward: Any, size: int, out: Path, opts: Options) -> None:
    opts.log("    exporting the OpenVINO IR the runner computes with (tracing: ~5-20 s)")
    export_ir(forward, size, out)


def _export_int8(
    out: Path, prepare: Prepare, agree: Agreement, opts: Options, *, transformer: bool
) -> dict[str, Any]:
    if not opts.int8:
        return {"stored": False, "skipped": "--no-int8"}
    opts.log("    quantising that IR to int8 (NNCF, ~30-60 s) and checking it against fp32")
    photos = sample_photos(opts.calibration_photos)
    verdict = export_int8(
        out, prepare, agree, transformer=transformer, photos=photos, seed=opts.seed
    )
    found = f"{verdict['measure']} {verdict['value']} (bound {verdict['bound']})"
    if verdict["stored"]:
        opts.log(f"    int8 IR kept: {found}")
    else:
        opts.log(f"    int8 IR not kept, not faithful enough: {found}; fp32/bf16 only")
    return verdict


def _stage_nima(p: Plan, out: Path, opts: Options) -> dict[str, Any]:
    import torch

    from runners.nima import (
        aesthetic_score,
        build_nima,
        load_nima_weights,
        nima_options,
        technical_score,
    )
    from runners.nima import uint8_forward as uint8_nima

    dest = out / p.spec.weights_file
    meta: dict[str, Any] = {"pyiqa_metric": NIMA_METRIC[p.spec.key], **nima_options(p.spec)}
    if p.weights == "random-init":
        opts.log(f"    building pyiqa {NIMA_METRIC[p.spec.key]} (InceptionResNetV2, random)")
        torch.manual_seed(opts.seed)
        net = build_nima(p.spec)
        torch.save({"params": net.state_dict()}, dest)
        meta["seed"] = opts.seed
    else:
        meta.update(_real_file(p, dest, opts.log))
        prefix = p.spec.weights_file.rsplit("-", 1)[-1].split(".")[0]  # NIMA_koniq-<sha[:8]>.pth
        if not sha256_file(dest).startswith(prefix):
            opts.log(f"    warning: sha256 does not start with {prefix}, as the file name says")
        net = build_nima(p.spec)
        load_nima_weights(net, dest)  # strict: a wrong file fails here
    _export_openvino(uint8_nima(net.eval()), NIMA_SIZE, out, opts)
    to_scale = technical_score if p.spec is NIMA_TECHNICAL else aesthetic_score
    meta["int8"] = _export_int8(out, nima_input, scores_agree(to_scale), opts, transformer=False)
    return meta


def _stage_emotion(p: Plan, out: Path, opts: Options) -> dict[str, Any]:
    import openvino as ov
    import torch
    from deepface.models.demography.pytorch.Emotion import EmotionModel

    from runners.emotion import INPUT_SIZE, channels_last_forward

    dest = out / p.spec.weights_file
    if p.weights == "random-init":
        opts.log("    building deepface EmotionModel (random)")
        torch.manual_seed(opts.seed)
        net = EmotionModel()
        torch.save(net.state_dict(), dest)
        meta: dict[str, Any] = {"seed": opts.seed}
    else:
        meta = _real_file(p, dest, opts.log)
        net = EmotionModel()
        net.load_state_dict(torch.load(dest, map_location="cpu", weights_only=True))
    opts.log("    exporting the OpenVINO IR the face runner scores emotion with")
    example = torch.zeros((1, INPUT_SIZE, INPUT_SIZE, 1))
    shape = ov.PartialShape([-1, INPUT_SIZE, INPUT_SIZE, 1])
    save_ir(channels_last_forward(net.eval()), example, shape, out / IR_FILE)
    return meta


def _stage_brisque(p: Plan, out: Path, opts: Options) -> dict[str, Any]:
    from brisque.models import MODEL_PATH

    for name in ("svm.txt", "normalize.pickle"):
        shutil.copyfile(Path(MODEL_PATH) / name, out / name)
    opts.log(f"    copied svm.txt and normalize.pickle from {MODEL_PATH}")
    return {"origin": "brisque package (brisque/models)"}


# Files a stored version must hold besides its weights (see is_complete).
REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    CLIP.key: (IR_FILE, CLIP_TEXT_IR_FILE, CLIP_TOKENIZER_FILE),
    NIMA_TECHNICAL.key: (IR_FILE,),
    NIMA_AESTHETIC.key: (IR_FILE,),
    EMOTION.key: (IR_FILE,),
    FACES.key: FACE_MODEL_FILES[1:],
}
# Whose import quantises an int8 IR (runners.serving.int8) and records the verdict.
QUANTISED = (CLIP, NIMA_TECHNICAL, NIMA_AESTHETIC)


def _download_mediapipe(dest: Path, log: Log) -> Path:
    """The mediapipe wheel, by pip (its index, proxy and cache settings), never installed."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
        "--implementation", "cp", "--abi", "cp311", "--dest", str(dest),
        f"mediapipe=={MEDIAPIPE_VERSION}",
    ]  # fmt: skip
    log(f"    pip download --no-deps mediapipe=={MEDIAPIPE_VERSION} (~36 MB)")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheel = dest / MEDIAPIPE_WHEEL
    if done.returncode != 0 or not wheel.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise Unreachable(f"faces: pip download mediapipe=={MEDIAPIPE_VERSION} failed: {tail[0]}")
    digest = sha256_file(wheel)
    if digest != MEDIAPIPE_WHEEL_SHA256:
        raise ValueError(f"{MEDIAPIPE_WHEEL}: sha256 {digest}, expected {MEDIAPIPE_WHEEL_SHA256}")
    return wheel


def _stage_faces(p: Plan, out: Path, opts: Options) -> dict[str, Any]:
    import zipfile

    import openvino as ov

    if p.local is not None:
        opts.log(f"    using {', '.join(FACE_MODEL_FILES)} from {p.local}")
        for name in FACE_MODEL_FILES:
            shutil.copyfile(p.local / name, out / name)
        meta: dict[str, Any] = {"origin": str(p.local)}
    else:
        with tempfile.TemporaryDirectory(prefix="festora-mediapipe-") as tmp:
            wheel = _download_mediapipe(Path(tmp), opts.log)
            with zipfile.ZipFile(wheel) as archive:
                for name, folder in MEDIAPIPE_MEMBERS.items():
                    (out / name).write_bytes(archive.read(folder + name))
        meta = {"origin": f"{MEDIAPIPE_WHEEL} (sha256 {MEDIAPIPE_WHEEL_SHA256})"}
    for name in FACE_MODEL_FILES:
        digest = sha256_file(out / name)
        if digest != FACE_FILE_SHA256[name]:
            raise ValueError(f"{name}: sha256 {digest}, expected {FACE_FILE_SHA256[name]}")
        ov.Core().read_model(str(out / name))  # OpenVINO reads it: the runner will too
    return {**meta, "mediapipe_version": MEDIAPIPE_VERSION}


STAGERS = {
    CLIP.key: _stage_clip,
    NIMA_TECHNICAL.key: _stage_nima,
    NIMA_AESTHETIC.key: _stage_nima,
    BRISQUE.key: _stage_brisque,
    EMOTION.key: _stage_emotion,
    FACES.key: _stage_faces,
}


def _deepface_env() -> None:
    # importing deepface picks a backend and creates $DEEPFACE_HOME/.deepface/weights
    os.environ.setdefault("DEEPFACE_BACKEND_ENGINE", "pytorch")


def import_one(p: Plan, opts: Options) -> Result:
    import bentoml

    start = time.perf_counter()
    spec = p.spec
    present = None if opts.force else find_present(p, opts)
    if present is not None:
        labels = present.info.labels
        opts.log(f"[{spec.key}] {present.tag} already present ({p.source}), skipped")
        return Result(
            spec.key,
            str(present.tag),
            p.weights,
            p.source,
            labels.get("sha256", ""),
            False,
            time.perf_counter() - start,
        )
    opts.log(f"[{spec.key}] importing {spec.store_name} ({p.weights}: {p.source})")
    if spec is EMOTION:
        _deepface_env()
    with tempfile.TemporaryDirectory(prefix=f"festora-import-{spec.key}-") as staging:
        out = Path(staging)
        try:
            meta = STAGERS[spec.key](p, out, opts)
        except Unreachable:
            raise
        except Exception as exc:  # reported as one clear line by main()
            origin = p.local or p.source
            cause = (str(exc).strip().splitlines() or [""])[0][:300]
            raise ImportFailed(
                f"{spec.key}: could not import {origin}: {type(exc).__name__}: {cause}"
            ) from exc
        files = {f.name: sha256_file(f) for f in sorted(out.iterdir()) if f.is_file()}
        size_mb = sum(f.stat().st_size for f in out.iterdir() if f.is_file()) / 1e6
        sha = files[spec.weights_file]
        metadata = {
            **meta,
            "description": spec.description,
            "weights": p.weights,
            "source": p.source,
            "files": files,
        }
        kwargs = {"_model_store": opts.model_store} if opts.model_store is not None else {}
        with bentoml.models.create(
            spec.store_name,
            labels=model_labels(spec, p.weights, p.source, sha),
            metadata=metadata,
            **kwargs,
        ) as model:
            for f in out.iterdir():
                shutil.move(str(f), os.path.join(model.path, f.name))
            tag = str(model.tag)
    seconds = time.perf_counter() - start
    opts.log(f"[{spec.key}] saved {tag} ({size_mb:.0f} MB, sha256 {sha[:12]}) in {seconds:.1f} s")
    return Result(spec.key, tag, p.weights, p.source, sha, True, seconds)


def import_models(keys: Sequence[str], opts: Options) -> list[Result]:
    """Import the named models (festora.models.SPECS keys). Real mode checks every source
    first and raises Unreachable, listing them, before fetching anything."""
    plans = [plan(SPECS[k], opts) for k in keys]
    todo = [p for p in plans if opts.force or find_present(p, opts) is None]
    problems = preflight(todo, opts)
    if problems:
        raise Unreachable("\n".join(problems))
    return [import_one(p, opts) for p in plans]


OFFLINE_HELP = """\
Real weights could not be imported:
{problems}

Offline? Either
  - import same-architecture random weights (tests, benchmarks; scores are meaningless):
        python -m scripts.import_models --random-init      (or WEIGHTS=random-init)
  - or copy the real files onto this machine and pass --weights-dir DIR, with
        DIR/{nima_t}, DIR/{nima_a}, DIR/{emotion},
        DIR/clip/ (a Hugging Face hub snapshot of {clip}, with its preprocessor and tokenizer:
                   hf download {clip} --local-dir DIR/clip),
        DIR/{faces} (from the mediapipe=={mediapipe} wheel's mediapipe/modules/)"""


def main(argv: Sequence[str] | None = None) -> int:
    from festora.config import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m scripts.import_models",
        description="Import the Festora models into the BentoML model store (idempotent).",
    )
    parser.add_argument(
        "--weights",
        choices=WEIGHTS_MODES,
        default=settings.weights,
        help="real (default, or $WEIGHTS) or random-init",
    )
    parser.add_argument(
        "--random-init",
        dest="weights",
        action="store_const",
        const="random-init",
        help="same as --weights random-init",
    )
    parser.add_argument(
        "--only", default=",".join(SPECS), help=f"comma-separated subset of: {', '.join(SPECS)}"
    )
    parser.add_argument("--seed", type=int, default=0, help="random-init seed (default 0)")
    parser.add_argument("--force", action="store_true", help="import even if already present")
    parser.add_argument("--weights-dir", type=Path, help="folder holding real weight files")
    parser.add_argument(
        "--no-int8",
        dest="int8",
        action="store_false",
        help="store no int8 IRs (a faster import; NIMA and CLIP compute in fp32 or bf16)",
    )
    parser.add_argument(
        "--calibration-photos",
        type=Path,
        help="folder of photos to calibrate and check the int8 IRs with "
        "(default: scikit-learn's two sample photos)",
    )
    args = parser.parse_args(argv)

    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = sorted(set(keys) - set(SPECS))
    if unknown:
        parser.error(f"unknown model(s): {', '.join(unknown)}; choose from {', '.join(SPECS)}")
    opts = Options(
        weights=args.weights,
        seed=args.seed,
        force=args.force,
        weights_dir=args.weights_dir,
        int8=args.int8,
        calibration_photos=args.calibration_photos,
        clip_model_name=settings.clip_model_name,
    )
    try:
        results = import_models(keys, opts)
    except Unreachable as exc:
        print(
            OFFLINE_HELP.format(
                problems="\n".join(f"  - {line}" for line in str(exc).splitlines()),
                nima_t=NIMA_TECHNICAL.weights_file,
                nima_a=NIMA_AESTHETIC.weights_file,
                emotion=EMOTION.weights_file,
                clip=opts.clip_model_name,
                faces=", DIR/".join(FACE_MODEL_FILES),
                mediapipe=MEDIAPIPE_VERSION,
            ),
            file=sys.stderr,
        )
        return 2
    except ImportFailed as exc:
        print(f"import failed: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - e.g. the model store is not writable
        print(f"import failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for r in results:
        state = "imported" if r.imported else "present "
        print(f"{state} {r.tag:<45} {r.weights:<11} {r.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
