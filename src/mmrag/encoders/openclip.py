"""open_clip-backed encoders: hub models, mmrag checkpoints and the built ``lite`` default.

One class, :class:`OpenClipEncoder`, wraps any open_clip model (``CLIP`` or ``CustomTextCLIP``)
with its preprocessing and tokenizer. Checkpoints use open_clip's own ``local-dir`` file names
(``open_clip_config.json`` + ``open_clip_model.safetensors``) plus ``mmrag.json``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmrag._lazy import require
from mmrag.encoders.base import FloatArray, PreparedImage, l2_normalize
from mmrag.encoders.bf16 import Bf16Forward, texts_in_bf16
from mmrag.encoders.lanes import FORWARDS, usable_cores
from mmrag.encoders.onnxrt import FastForward
from mmrag.encoders.packing import PackedBatches, packable
from mmrag.encoders.warmup import warm_text_paths
from mmrag.errors import EncoderError

if TYPE_CHECKING:
    from typing import TypeAlias

    import torch
    from PIL import Image

    ImageItem: TypeAlias = Image.Image | str | Path | PreparedImage  # what encode_image takes

log = logging.getLogger(__name__)

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
MMRAG_FILE = "mmrag.json"
# Machine-specific paths are stored as placeholders and resolved at load time, so a
# checkpoint trained on one machine loads on another.
PLACEHOLDERS: dict[str, Callable[[], str]] = {}


def _register_placeholder(token: str, resolve: Callable[[], str]) -> None:
    PLACEHOLDERS[token] = resolve


def _substitute(obj: Any, forward: bool) -> Any:
    """Replace placeholder tokens by paths (forward) or paths by tokens (backward)."""
    if isinstance(obj, dict):
        return {k: _substitute(v, forward) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_substitute(v, forward) for v in obj]
    if isinstance(obj, str):
        for token, resolve in PLACEHOLDERS.items():
            if forward and obj == token:
                return resolve()
            if not forward and obj == resolve():
                return token
    return obj


class DynamicHFTokenizer:
    """A Hugging Face tokenizer for open_clip HF text towers that pads to the longest text.

    open_clip's ``HFTokenizer`` always pads to ``context_length`` (256 for MiniLM), so a four-word
    query costs as much as a full abstract. HF towers build their attention mask from the pad id,
    so padding to the longest text in the batch gives the same embeddings at a fraction of the cost.

    Args:
        name_or_path: Tokenizer folder or hub name.
        context_length: Truncation length in tokens.
    """

    def __init__(self, name_or_path: str, context_length: int) -> None:
        transformers = require("transformers", "core")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path)
        self.context_length = context_length

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        batch = [texts] if isinstance(texts, str) else list(texts)
        # open_clip's HFTokenizer cleans whitespace the same way.
        cleaned = [" ".join(t.split()) for t in batch]
        enc = self.tokenizer(
            cleaned, return_tensors="pt", padding="longest", truncation=True, max_length=self.context_length
        )
        return enc.input_ids  # type: ignore[no-any-return]


class OpenClipEncoder:
    """A dual encoder over an open_clip model.

    Args:
        model: An open_clip ``CLIP`` / ``CustomTextCLIP`` module (put in eval mode here).
        preprocess: Image transform returning a ``(3, H, W)`` tensor.
        tokenizer: open_clip tokenizer (callable on a list of strings).
        encoder_id: Stable id (names the store's dense vector).
        spec: String that reloads this encoder through ``load_encoder``.
        aligned: Whether image and text heads were trained together.
        batch_size: Default batch size.
        info: Extra facts reported by :meth:`describe`.
        runtime: Where the image tower runs: ``auto`` (ONNX Runtime when installed and within
            parity of torch, ~4x faster on CPU), ``onnx`` or ``torch``; see :mod:`mmrag.encoders.onnxrt`.
        text_precision: The text tower's dtype (a lone text too): ``auto`` (bf16 on CPUs with
            AMX or AVX512-BF16), ``fp32`` or ``bf16``; ``None``: the process default
            (:mod:`mmrag.encoders.bf16`).

    Example:
        >>> enc = load_encoder("lite")                     # doctest: +SKIP
        >>> enc.encode_text(["a dog on grass"]).shape      # doctest: +SKIP
        (1, 512)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        *,
        encoder_id: str,
        spec: str,
        aligned: bool,
        batch_size: int = 32,
        info: dict[str, Any] | None = None,
        runtime: str | None = None,
        text_precision: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise EncoderError(f"batch_size must be >= 1, got {batch_size}")
        # open_clip's encode_text / encode_image are not typed; Any keeps mypy honest elsewhere.
        self.model: Any = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.id = encoder_id
        self.spec = spec
        self.aligned = aligned
        self.batch_size = batch_size
        self.info = dict(info or {})
        self.dim = int(self._probe_dim())
        self.draft_decode = True  # JPEG paths decode at reduced scale (see _load_batch)
        self.decode_workers = default_decode_workers()  # image_batches' decoding threads
        self.set_runtime(runtime, text_precision)

    @property
    def input_size(self) -> int:
        """The image tower's input side in pixels (the larger one for a non-square input)."""
        size = getattr(self.model.visual, "image_size", 224)
        return int(max(size) if isinstance(size, tuple | list) else size)

    def set_runtime(self, runtime: str | None, text_precision: str | None = None) -> None:
        """Choose where the towers run (``auto``, ``onnx``, ``torch``) and the text tower's
        precision (``auto``, ``fp32``, ``bf16``; ``None``: the process default)."""
        # spin=False: the image tower shares the cores with image_batches' decoding threads
        self.image_forward = FastForward(
            self.model.visual, runtime=runtime, name=f"{self.id} image tower", spin=False
        )
        # An HF text tower (the lite family: MiniLM) exports whole; open_clip's own CLIP text
        # transformer (ViT-B/32 & co.) stays in torch.
        text = getattr(self.model, "text", None)
        self.text_forward: Callable[[torch.Tensor], torch.Tensor] = (
            FastForward(text, runtime=runtime, name=f"{self.id} text tower")
            if text is not None
            else self.model.encode_text
        )
        # Texts (bf16.min_batch: a lone one too) run on a bf16 copy on bf16 hardware (encoders.bf16).
        self.text_bf16 = (
            Bf16Forward(
                text, fallback=self.text_forward, name=f"{self.id} text tower", example=self._trace_example
            )
            if text is not None and texts_in_bf16(text_precision)
            else None
        )
        # Such batches of short texts of unequal length run packed, without padding (encoders.packing).
        pad_id = getattr(getattr(text, "config", None), "pad_token_id", None)
        self.text_packed: PackedBatches | None = None
        if text is not None and self.text_bf16 is not None and pad_id is not None and packable(text):
            self.text_packed = PackedBatches(
                text, reference=self.text_forward, padded=self.text_bf16, pad_id=int(pad_id),
                name=f"{self.id} text tower", example=self._trace_example,
            )  # fmt: skip

    def _trace_example(self) -> torch.Tensor:
        """Token ids of a short and a long text: a padded batch, to trace the text tower on."""
        return self.tokenizer(["probe", "a longer probe text, so that the first one is padded"])

    def _probe_dim(self) -> int:
        torch = require("torch", "core")
        try:
            with torch.inference_mode():
                out = self.model.encode_text(self.tokenizer(["probe"]))
        except (RuntimeError, IndexError, ValueError) as exc:
            raise EncoderError(
                f"encoder {self.id!r}: the tokenizer does not fit the model ({exc}); "
                "check the tokenizer / context_length recorded in the checkpoint's mmrag.json"
            ) from exc
        return int(out.shape[-1])

    # -- text -------------------------------------------------------------------------------
    def encode_text(self, texts: Sequence[str], *, batch_size: int | None = None) -> FloatArray:
        """Embed texts; returns an L2-normalised ``(len(texts), dim)`` float32 array."""
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings, not a single string")
        torch = require("torch", "core")
        bs = batch_size or self.batch_size
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Sorting by length keeps padding low inside each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), bs):
                idx = order[start : start + bs]
                tokens = self.tokenizer([texts[i] or " " for i in idx])
                # A lane of the process's FORWARDS (shared with the reranker: as many forward passes
                # as fit the cores) is taken per batch, not per call: a query from the API gets its
                # turn between two batches of a long ingest instead of waiting for all of it.
                # bf16 runs its fp32 fallback (text_forward) itself while it cannot be used
                bf16, packed = self.text_bf16, self.text_packed  # one read: set_runtime may swap them
                fwd: Callable[[Any], Any] = self.text_forward
                if packed is not None and len(idx) >= packed.min_batch and packed.wanted(tokens):
                    fwd = packed
                elif bf16 is not None and len(idx) >= bf16.min_batch:
                    fwd = bf16
                with FORWARDS:
                    out[idx] = fwd(tokens).float().numpy()
        return l2_normalize(out)

    def warm_up(self) -> None:
        """Build and check the text paths now (:mod:`mmrag.encoders.warmup`), the long text in as
        many copies as the bf16 copy takes at once (more where it could not be traced and runs eagerly)."""

        def long_copies() -> int:  # asked once the warm-up's short texts made the copy
            return self.text_bf16.min_batch if self.text_bf16 is not None else 1

        warm_text_paths(self, long_copies=long_copies)

    # -- images -----------------------------------------------------------------------------
    def prepare_image(self, image: Image.Image) -> PreparedImage:
        """``image`` as this encoder's input tensor, for :meth:`encode_image` to take later (the
        preprocessing of a decoded image, done on the caller's thread)."""
        return PreparedImage(self.id, self.preprocess(image.convert("RGB")))

    def _load_batch(self, items: Sequence[ImageItem]) -> torch.Tensor:
        torch = require("torch", "core")
        pil = require("PIL.Image", "core")
        tensors = []
        for item in items:
            if isinstance(item, PreparedImage):
                if item.encoder != self.id:
                    raise EncoderError(f"an image prepared by encoder {item.encoder!r} given to {self.id!r}")
                tensors.append(item.data)
                continue
            if isinstance(item, str | Path):
                try:
                    with pil.open(item) as im:
                        # A JPEG decodes at 1/2..1/8 scale (DCT scaling) when that still leaves
                        # both sides >= 3x the model's input: a 12 Mpx photo then costs ~1/16 of
                        # a full decode; min cosine to a full decode 0.998 on 128 8x upscaled
                        # photos (0.987 at 2x the input: bench_image_path.py).
                        if self.draft_decode:
                            im.draft("RGB", (3 * self.input_size, 3 * self.input_size))
                        img = im.convert("RGB")
                except (OSError, pil.DecompressionBombError, SyntaxError) as exc:
                    raise EncoderError(f"cannot read image {item}: {exc}") from exc
            else:
                img = item.convert("RGB")
            tensors.append(self.preprocess(img))
        return torch.stack(tensors)  # type: ignore[no-any-return]

    def image_batches(
        self, images: Sequence[ImageItem], batch_size: int
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Preprocessed image batches as ``(start index, (n, 3, H, W) tensor)``, in input order.

        The next two batches are decoded and preprocessed on :attr:`decode_workers` threads (each
        takes a slice of a batch; Pillow releases the GIL while it decodes and resizes) while the
        caller runs the model on this one. A PIL image given twice is loaded here first, not by two
        threads at once. :meth:`encode_image` and the training feature extractors share it.

        Args:
            images: PIL images, paths, or images this encoder prepared (:meth:`prepare_image`).
            batch_size: Images per batch (the last one may be shorter).

        Raises:
            EncoderError: If an image file cannot be read.
        """
        cat = require("torch", "core").cat
        bs, workers = batch_size, max(1, self.decode_workers)
        starts = list(range(0, len(images), bs))
        if not starts:
            return
        if all(isinstance(item, PreparedImage) for item in images):  # stacking is all that is left
            yield from ((start, self._load_batch(images[start : start + bs])) for start in starts)
            return
        seen: set[int] = set()
        for item in images:
            if not isinstance(item, str | Path | PreparedImage):
                if id(item) in seen:
                    item.load()
                seen.add(id(item))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmrag-img")

        def load(start: int) -> list[Future[torch.Tensor]]:
            chunk = images[start : start + bs]
            n = min(workers, len(chunk))  # n slices of (nearly) equal size
            cuts = [len(chunk) * j // n for j in range(n + 1)]
            return [pool.submit(self._load_batch, chunk[a:b]) for a, b in itertools.pairwise(cuts)]

        ahead = deque(load(s) for s in starts[:2])
        try:
            for i, start in enumerate(starts):
                parts = ahead.popleft()
                if i + 2 < len(starts):
                    ahead.append(load(starts[i + 2]))
                yield start, parts[0].result() if len(parts) == 1 else cat([f.result() for f in parts])
        finally:  # an error or an early close: the batches decoded ahead are not waited for
            pool.shutdown(wait=True, cancel_futures=True)

    def encode_image(self, images: Sequence[ImageItem], *, batch_size: int | None = None) -> FloatArray:
        """Embed images (PIL images, paths, or :meth:`prepare_image` results); returns
        L2-normalised float32 rows."""
        torch = require("torch", "core")
        bs = batch_size or self.batch_size
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start, batch in self.image_batches(images, bs):
                with FORWARDS:  # per batch, as in encode_text
                    out[start : start + len(batch)] = self.image_forward(batch).float().numpy()
        return l2_normalize(out)

    def describe(self) -> dict[str, Any]:
        """Facts about this encoder for ``mmrag info`` and the UI."""
        n_params = sum(p.numel() for p in self.model.parameters())
        bf16 = self.text_bf16
        return {
            "id": self.id,
            "spec": self.spec,
            "dim": self.dim,
            "aligned": self.aligned,
            "parameters": n_params,
            "image_runtime": self.image_forward.active,
            "text_batch_precision": "bf16" if bf16 is not None and bf16.usable() else "fp32",
            "text_bf16_traced": bf16 is not None and bf16.traced,
            "text_packed": self.text_packed is not None and self.text_packed.active,
            **self.info,
        }

    # -- checkpoints ------------------------------------------------------------------------
    def save(
        self, directory: str | Path, *, model_cfg: dict[str, Any], extra: dict[str, Any] | None = None
    ) -> Path:
        """Write an mmrag checkpoint directory that ``load_encoder(<dir>)`` reloads.

        Args:
            directory: Target folder (created).
            model_cfg: The open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``).
            extra: Facts to keep in ``mmrag.json`` (e.g. the training report path).
        """
        safetensors = require("safetensors.torch", "core")
        if not model_cfg:
            raise EncoderError(f"cannot save encoder {self.id!r}: its open_clip model config is unknown")
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.model.state_dict().items()}
        safetensors.save_file(state, str(path / WEIGHTS_FILE))
        preprocess_cfg = self.info.get("preprocess_cfg", {})
        cfg = {"model_cfg": _substitute(model_cfg, forward=False), "preprocess_cfg": preprocess_cfg}
        (path / CONFIG_FILE).write_text(json.dumps(cfg, indent=2))
        meta = {
            "format": "mmrag-encoder",
            "version": 1,
            "name": self.info.get("name", "custom"),
            "aligned": self.aligned,
            "tokenizer": _substitute(self.info.get("tokenizer", {}), forward=False),
            **(extra or {}),
        }
        (path / MMRAG_FILE).write_text(json.dumps(meta, indent=2))
        return path


def default_decode_workers() -> int:
    """Threads that decode and resize images beside the forward pass: one per core, up to 4.

    With 2 cores and 2 torch threads, 2 decoding threads took 1792 px JPEGs from 76.5 to 109.2
    images/s end to end, the tower's ONNX Runtime threads not spinning (96.2 spinning);
    ``benchmarks/bench_image_path.py``.
    """
    return max(1, min(4, usable_cores()))


def weights_digest(path: Path) -> str:
    """Short content hash of a weights file: part of the encoder id of a checkpoint."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:10]
