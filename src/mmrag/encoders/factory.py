"""One factory for every encoder family; configs are data (open_clip JSON configs)."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

from mmrag._lazy import require
from mmrag.encoders.base import vector_name
from mmrag.encoders.bf16 import check_precision
from mmrag.encoders.onnxrt import check_runtime
from mmrag.encoders.openclip import (
    CONFIG_FILE,
    MMRAG_FILE,
    WEIGHTS_FILE,
    DynamicHFTokenizer,
    OpenClipEncoder,
    _substitute,
    weights_digest,
)
from mmrag.errors import EncoderError

log = logging.getLogger(__name__)

SPEC_HELP = (
    "use 'lite' (the built default), 'lite:efficientnet_lite2', 'openclip:<arch>/<pretrained>' "
    "(e.g. openclip:ViT-B-32/laion2b_s34b_b79k), 'hf-hub:<org>/<repo>', or a checkpoint directory "
    "written by `mmrag train`"
)


def set_threads(threads: int) -> None:
    """Set torch's intra-op thread count (0 keeps torch's default).

    With 2 cores shared by Qdrant or Streamlit, 1 thread is often faster than 2: measure.
    """
    if threads < 0:
        raise EncoderError(f"threads must be >= 0, got {threads}")
    if threads:
        require("torch", "core").set_num_threads(threads)


def load_encoder(
    spec: str = "lite",
    *,
    batch_size: int = 32,
    threads: int = 0,
    runtime: str | None = None,
    text_precision: str | None = None,
) -> OpenClipEncoder:
    """Load an encoder from a spec string.

    Args:
        spec: See the module docstring for the accepted forms.
        batch_size: Default encoding batch size.
        threads: torch intra-op threads (0 = torch default).
        runtime: Where the image tower runs: ``auto`` (ONNX Runtime when installed and exact),
            ``onnx`` or ``torch`` (:mod:`mmrag.encoders.onnxrt`); ``None``: the process default
            (``MMRAG_RUNTIME`` in the CLI, else ``auto``).
        text_precision: The text tower's dtype (a lone text too): ``auto`` (bf16 on CPUs with
            AMX or AVX512-BF16), ``fp32`` or ``bf16`` (:mod:`mmrag.encoders.bf16`); ``None``: the
            process default.

    Raises:
        EncoderError: The spec is malformed, a checkpoint is incomplete, or the weights cannot
            be fetched (this machine may have no hub access: use ``lite`` or a local checkpoint).

    Example:
        >>> enc = load_encoder("lite")                      # doctest: +SKIP
        >>> enc.encode_text(["hello"]).shape                # doctest: +SKIP
        (1, 512)
    """
    set_threads(threads)
    if runtime is not None:
        check_runtime(runtime)
    if text_precision is not None:
        check_precision(text_precision)
    encoder = _load(spec.strip(), batch_size)
    if runtime is not None or text_precision is not None:
        encoder.set_runtime(runtime, text_precision)
    return encoder


def _load(spec: str, batch_size: int) -> OpenClipEncoder:
    if not spec:
        raise EncoderError(f"empty encoder spec; {SPEC_HELP}")
    if spec == "lite" or spec.startswith("lite:"):
        from mmrag.encoders.lite import build_lite

        tower = spec.partition(":")[2] or "efficientnet_lite0"
        return build_lite(tower, batch_size=batch_size)
    if spec.startswith("openclip:"):
        arch, _, pretrained = spec.removeprefix("openclip:").partition("/")
        if not arch:
            raise EncoderError(f"missing architecture in {spec!r}; {SPEC_HELP}")
        return _load_open_clip(arch, pretrained or None, spec=spec, batch_size=batch_size)
    if spec.startswith("hf-hub:"):
        if not spec.removeprefix("hf-hub:"):
            raise EncoderError(f"missing repository in {spec!r}; {SPEC_HELP}")
        return _load_open_clip(spec, None, spec=spec, batch_size=batch_size)
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_checkpoint(path, batch_size=batch_size)
    raise EncoderError(f"unknown encoder spec {spec!r} (not a directory either); {SPEC_HELP}")


@functools.lru_cache(maxsize=4)
def cached_encoder(
    spec: str = "lite",
    *,
    batch_size: int = 32,
    threads: int = 0,
    runtime: str | None = None,
    text_precision: str | None = None,
) -> OpenClipEncoder:
    """:func:`load_encoder` memoised per process, for long-lived callers (CLI, API, UI).

    Loading takes seconds; a server or a test session that asks for the same spec again gets
    the same (thread-safe) encoder. A checkpoint rewritten on disk needs a new process.
    """
    return load_encoder(
        spec, batch_size=batch_size, threads=threads, runtime=runtime, text_precision=text_precision
    )


def _load_open_clip(name: str, pretrained: str | None, *, spec: str, batch_size: int) -> OpenClipEncoder:
    open_clip = require("open_clip", "core")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
        tokenizer = open_clip.get_tokenizer(name)
    except (RuntimeError, OSError, ValueError) as exc:
        # open_clip wraps hub download failures (OSError, LocalEntryNotFoundError) in RuntimeError.
        chain = [exc, exc.__cause__, exc.__context__]
        if (
            any(isinstance(e, OSError) for e in chain)
            or "hub" in str(exc).lower()
            or "offline" in str(exc).lower()
        ):
            raise EncoderError(
                f"cannot fetch {name!r} (pretrained={pretrained!r}): {exc}. Without access to the "
                "Hugging Face hub, use 'lite' or a local checkpoint directory"
            ) from exc
        raise EncoderError(
            f"open_clip cannot build {name!r} with pretrained={pretrained!r}: {exc}. "
            f"Check the name with open_clip.list_models() / list_pretrained(); {SPEC_HELP}"
        ) from exc
    # An untrained architecture is not "aligned": its scores carry no meaning.
    aligned = bool(pretrained) or name.startswith("hf-hub:")
    model_cfg = open_clip.get_model_config(name) if not name.startswith("hf-hub:") else None
    pcfg = open_clip.get_model_preprocess_cfg(model)
    return OpenClipEncoder(
        model,
        preprocess,
        tokenizer,
        encoder_id=vector_name(spec),
        spec=spec,
        aligned=aligned,
        batch_size=batch_size,
        info={
            "name": name,
            "pretrained": pretrained,
            "model_cfg": model_cfg,
            "preprocess_cfg": {k: (list(v) if isinstance(v, tuple) else v) for k, v in pcfg.items()},
            "tokenizer": {"kind": "open_clip", "name": name, "context_length": int(model.context_length)},
        },
    )


def load_checkpoint(path: Path, *, batch_size: int = 32) -> OpenClipEncoder:
    """Load a checkpoint directory written by :meth:`OpenClipEncoder.save`."""
    cfg_file, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
    missing = [p.name for p in (cfg_file, weights, path / MMRAG_FILE) if not p.is_file()]
    if missing:
        raise EncoderError(
            f"{path} is not an mmrag checkpoint (missing {', '.join(missing)}); write one with `mmrag train`"
        )
    try:
        cfg = json.loads(cfg_file.read_text())
        meta: dict[str, Any] = json.loads((path / MMRAG_FILE).read_text())
        model_cfg = cfg["model_cfg"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise EncoderError(
            f"{path}: malformed checkpoint config ({exc}); re-save it with `mmrag train`"
        ) from exc
    safetensors = require("safetensors.torch", "core")
    safetensors_lib = require("safetensors", "core")
    open_clip = require("open_clip", "core")
    if meta.get("name") == "lite":
        from mmrag.encoders.lite import build_model, lite_transforms

        model = build_model(model_cfg, load_tower_weights=False)
        preprocess, tokenizer, preprocess_cfg = lite_transforms(model_cfg)
    else:
        resolved = _substitute(model_cfg, forward=True)
        cls = (
            open_clip.CustomTextCLIP if resolved.get("text_cfg", {}).get("hf_model_name") else open_clip.CLIP
        )
        model = cls(**resolved)
        pcfg = cfg.get("preprocess_cfg") or {}
        size: Any = pcfg.get("size") or getattr(model.visual, "image_size", 224)
        preprocess = open_clip.image_transform(
            tuple(size) if isinstance(size, list | tuple) else int(size),
            is_train=False,
            mean=pcfg.get("mean"),
            std=pcfg.get("std"),
            resize_mode=pcfg.get("resize_mode"),
            interpolation=pcfg.get("interpolation"),
        )
        tok = _substitute(meta.get("tokenizer", {}), forward=True)
        tokenizer = (
            DynamicHFTokenizer(tok["name"], context_length=tok.get("context_length", 77))
            if tok.get("kind") == "hf"
            else open_clip.get_tokenizer(
                tok.get("name", "ViT-B-32"),
                context_length=tok.get("context_length")
                or resolved.get("text_cfg", {}).get("context_length"),
            )
        )
        preprocess_cfg = pcfg
    try:
        state = safetensors.load_file(str(weights))
        model.load_state_dict(state)
    except (RuntimeError, safetensors_lib.SafetensorError) as exc:
        raise EncoderError(
            f"{weights}: weights do not fit the config ({exc}); the checkpoint is corrupt"
        ) from exc
    digest = weights_digest(weights)
    return OpenClipEncoder(
        model,
        preprocess,
        tokenizer,
        encoder_id=f"{vector_name(meta.get('name', 'ckpt'))}-{digest}",
        spec=str(path.resolve()),
        aligned=bool(meta.get("aligned", False)),
        batch_size=batch_size,
        info={
            **{k: v for k, v in meta.items() if k not in {"format", "version"}},
            "model_cfg": model_cfg,
            "preprocess_cfg": preprocess_cfg,
            "checkpoint": str(path.resolve()),
        },
    )
