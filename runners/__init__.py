"""Model runners: one BentoML service per model, each with adaptive batching.

    runners.clip:CLIPEncoder        encode(N x 224 x 224 x 3 uint8) -> N x 512 float32, unit norm
    runners.nima:NimaTechnical      score(N x 299 x 299 x 3 uint8)  -> N float32, 1-10 (KonIQ)
    runners.nima:NimaAesthetic      score(N x 299 x 299 x 3 uint8)  -> N float32, 1-10 (AVA)
    runners.brisque:Brisque         score([H x W x 3 uint8])        -> [float | None]
    runners.faces:FaceAnalyzer      analyze([H x W x 3 uint8])      -> [{detector, faces: [face]}]

Inputs come from `festora.preprocess`; weights from the BentoML model store
(`festora.models`, written by `scripts/import_models.py`). Every runner also serves
`status()` with the fields of `festora.schemas.ModelStatus`. Heavy imports happen in
`__init__`, so importing this package is cheap.

Speed and memory (measured in benchmarks/RESULTS.md): NIMA and CLIP compute in bf16 where the
CPU has native bf16 (`runners.serving.precision`, FESTORA_PRECISION=auto|bf16|fp32); BRISQUE's
features are computed by `runners.brisque_features` (the package's numbers, ~6x faster). What the
runners share to be served well lives in `runners.serving`.
"""
