"""Sentence-transformers BERT models (all-MiniLM-L6-v2 first) run on ONNX Runtime, no torch.

The model directory is the one sentence-transformers reads: ``config.json`` and
``model.safetensors`` (a BERT encoder), ``tokenizer.json``, ``modules.json`` (Transformer,
mean or CLS Pooling, optional Normalize) and ``sentence_bert_config.json`` (max_seq_length).
Nothing else is read and nothing is downloaded.

The ONNX graph is not shipped: it is built in memory when the model loads, from the
config (layers, heads, sizes), with the weights of ``model.safetensors`` as its
initializers, so no second copy of the weights exists on disk. It uses ONNX Runtime's
fused transformer operators (``EmbedLayerNormalization``, ``Attention``,
``SkipLayerNormalization``, ``BiasGelu``: exact, erf-based GELU as BERT's) and ends in
the model's pooling (the mean over the attention mask, or the [CLS] token) and L2
normalization when it has a Normalize module, as the sentence-transformers modules do.
The files are the same, so the fingerprint is the same: a collection built with
sentence-transformers accepts this embedder's vectors and the other way round (their
vectors agree to about 3e-7).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from latentdb.embed._common import FloatMatrix, TextModel
from latentdb.errors import EmbedderError
from latentdb.space import Metric

__all__ = ["OnnxBertEmbedder", "available_threads"]

# Texts per progress step.
_CHUNK = 256
# Texts and padded tokens per ONNX Runtime call, inputs sorted by token count. Small
# batches keep the activations in cache: on the 2-core machine, 2,000 PyPI summaries ran
# at 166-173 texts/s with 8 to 48 texts a batch, 157 at 128 and 129 at 512; on stdlib
# docstrings (28 tokens on average) 1,024 to 4,096 tokens a batch made no difference.
_BATCH_SIZE = 32
_BATCH_TOKENS = 2048
_MS = "com.microsoft"


def available_threads() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS and Windows have no affinity call
        return max(1, os.cpu_count() or 1)


class OnnxBertEmbedder(TextModel):
    """Embeds text with a sentence-transformers BERT model on ONNX Runtime (CPU).

    Loads on first use. The ONNX Runtime session runs each batch on one thread (no
    intra-op pool, so nothing spins or waits on a descheduled peer), and a call with
    several batches runs up to ``threads`` of them at once, each on its own thread:
    one query text takes one core, and a large input takes every core.

    Why: an intra-op pool splits every operator of a short text across the cores and
    meets at each one. With another process on one of two cores, one short query took
    0.39-0.89 s on torch's default threads against ~45 ms on one (issue 18); on ONNX
    Runtime one thread is as fast as two for a short text even on an idle machine, and
    whole batches side by side meet once per batch (bench/results/text.md).

    Args:
        name: The embedder string it was registered under.
        path: The sentence-transformers model directory.
        model: The model's name in the space (default: the path).
        threads: Batches run at once (default: :func:`available_threads`).
    """

    def __init__(
        self, name: str, *, path: Path, model: str | None = None, threads: int | None = None
    ) -> None:
        self.name = name
        self.path = path
        self.model = model or str(path)
        self.metric: Metric = "cosine"
        self._settings = _read_settings(path)
        self.dimension = self._settings.hidden_size
        self.normalized = self._settings.normalize
        self.threads = threads if threads is not None else available_threads()
        self._session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._session is None:
                self._tokenizer = _load_tokenizer(self.path, self._settings.max_length)
                self._session = _load_session(self.path, self._settings)
            return self._session, self._tokenizer

    def embed_texts(
        self,
        texts: Sequence[str],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> FloatMatrix:
        """Embed texts into float32 (n, dimension) vectors.

        Texts are stripped (as sentence-transformers does), cut at the model's
        ``max_seq_length`` tokens, sorted by token count and run in batches of similar
        length, so little time goes on padding. One batch (one query text, say) runs in
        the calling thread; more run ``threads`` at a time.

        Args:
            texts: The texts, in order.
            progress: Called with the number of texts embedded so far, after each chunk.

        Returns:
            float32 (len(texts), dimension), row i for texts[i].
        """
        session, tokenizer = self._load()
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        cleaned = [self._settings.clean(text) for text in texts]
        if len(cleaned) == 1:
            encodings = [tokenizer.encode(cleaned[0])]
        else:
            encodings = tokenizer.encode_batch(cleaned)
        token_ids = [encoding.ids for encoding in encodings]
        order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
        # No more than a share of the texts a batch, so that a few texts still fill
        # every thread (a batch of 8 to 48 texts runs as fast per text as one of 32).
        size = min(_BATCH_SIZE, -(-len(order) // self.threads))
        batches = _batches(order, token_ids, size)
        done = 0
        reported = 0
        with _batch_runner(self.threads, len(batches)) as run_all:
            results = run_all(lambda batch: _run(session, [token_ids[i] for i in batch]), batches)
            for batch, vectors in zip(batches, results, strict=True):
                out[batch] = vectors
                done += len(batch)
                if progress is not None and (done - reported >= _CHUNK or done == len(order)):
                    progress(done)
                    reported = done
        return out


Batch = list[int]
BatchRunner = Callable[[Callable[[Batch], FloatMatrix], list[Batch]], Iterator[FloatMatrix]]


@contextmanager
def _batch_runner(threads: int, batches: int) -> Iterator[BatchRunner]:
    """A map over batches, results in order: in the calling thread for one batch (or one
    thread), else on a pool of ``threads`` threads closed when the block ends.
    ONNX Runtime's ``run`` is thread-safe and releases the GIL."""
    workers = min(threads, batches)
    if workers <= 1:
        yield lambda run, items: map(run, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="latentdb-embed") as pool:
        yield lambda run, items: pool.map(run, items)


def _batches(order: list[int], token_ids: list[list[int]], size: int) -> list[list[int]]:
    """Consecutive runs of ``order`` (sorted by length) of at most ``size`` texts and
    _BATCH_TOKENS padded tokens."""
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = len(token_ids[index])  # sorted: the newest is the longest
        if current and (len(current) >= size or (len(current) + 1) * longest > _BATCH_TOKENS):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def _run(session: Any, token_ids: list[list[int]]) -> FloatMatrix:
    """One ONNX Runtime call on a batch of token id lists (right-padded here)."""
    longest = max(len(ids) for ids in token_ids)
    ids = np.zeros((len(token_ids), longest), dtype=np.int32)
    mask = np.zeros((len(token_ids), longest), dtype=np.int32)
    for row, values in enumerate(token_ids):
        ids[row, : len(values)] = values
        mask[row, : len(values)] = 1
    (vectors,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
    return np.asarray(vectors, dtype=np.float32)


class _Settings:
    """What the model directory says about the encoder, pooling and inputs."""

    def __init__(self, path: Path) -> None:
        config = _read_json(path / "config.json")
        if config.get("model_type") != "bert":
            raise EmbedderError(
                f"{path}: ONNX Runtime runs BERT encoders here; this model is "
                f"{config.get('model_type')!r} (use 'sentence-transformers:{path}')"
            )
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise EmbedderError(f"{path}: only absolute position embeddings are supported")
        if config.get("hidden_act", "gelu") != "gelu":
            raise EmbedderError(
                f"{path}: hidden_act {config.get('hidden_act')!r} is not supported (gelu is)"
            )
        try:
            self.hidden_size = int(config["hidden_size"])
            self.layers = int(config["num_hidden_layers"])
            self.heads = int(config["num_attention_heads"])
            self.epsilon = float(config.get("layer_norm_eps", 1e-12))
            positions = int(config["max_position_embeddings"])
        except (KeyError, TypeError, ValueError) as error:
            raise EmbedderError(f"{path / 'config.json'}: missing or bad {error}") from None
        modules = _read_json(path / "modules.json")
        if not isinstance(modules, list):
            raise EmbedderError(f"{path / 'modules.json'}: expected a list of modules")
        kinds = [str(module.get("type", "")).rsplit(".", 1)[-1] for module in modules]
        pooling = next((m for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
        if (
            kinds[:2] != ["Transformer", "Pooling"]
            or pooling is None
            or not set(kinds[2:]) <= {"Normalize"}
        ):
            raise EmbedderError(
                f"{path}: ONNX Runtime runs Transformer, Pooling and Normalize modules; "
                f"this model has {kinds} (use 'sentence-transformers:{path}')"
            )
        pooling_config = _read_json(path / pooling["path"] / "config.json")
        modes = [key for key, value in pooling_config.items() if key.startswith("pooling_mode")]
        chosen = [key for key in modes if pooling_config[key]]
        poolings = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}
        if len(chosen) != 1 or chosen[0] not in poolings:
            raise EmbedderError(
                f"{path}: ONNX Runtime runs mean or CLS pooling; this model pools by "
                f"{chosen} (use 'sentence-transformers:{path}')"
            )
        self.pooling = poolings[chosen[0]]
        self.normalize = "Normalize" in kinds
        sentence_config = path / "sentence_bert_config.json"
        bert = _read_json(sentence_config) if sentence_config.is_file() else {}
        self.max_length = min(int(bert.get("max_seq_length") or positions), positions)
        self.lowercase = bool(bert.get("do_lower_case", False))

    def clean(self, text: str) -> str:
        """The text as sentence-transformers feeds it to the tokenizer."""
        text = text.strip()
        return text.lower() if self.lowercase else text


def _read_settings(path: Path) -> _Settings:
    if not (path / "config.json").is_file() or not (path / "modules.json").is_file():
        raise EmbedderError(
            f"{path} is not a sentence-transformers model directory "
            "(config.json and modules.json are needed)"
        )
    return _Settings(path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise EmbedderError(f"cannot read {path}: {error}") from None


def _load_tokenizer(path: Path, max_length: int) -> Any:
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    except Exception as error:
        raise EmbedderError(f"cannot load the tokenizer of {path}: {error}") from error
    tokenizer.no_padding()  # batches are padded to their own longest text in _run
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


def _load_session(path: Path, settings: _Settings) -> Any:
    import onnxruntime

    try:
        from safetensors.numpy import load_file

        weights = load_file(str(path / "model.safetensors"))
    except Exception as error:
        raise EmbedderError(f"cannot read the weights of {path}: {error}") from error
    graph = bert_graph(settings, weights)
    del weights
    options = onnxruntime.SessionOptions()
    # One thread per run, the caller's: batches run side by side instead (see
    # OnnxBertEmbedder). Spinning stays off, should a pool ever be configured: spinning
    # threads steal the cores from whatever runs between two calls.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise EmbedderError(f"ONNX Runtime cannot load the model at {path}: {error}") from error


def bert_graph(settings: _Settings, weights: dict[str, np.ndarray]) -> bytes:
    """The serialized ONNX model of a BERT encoder with its pooling (and normalization).

    Inputs ``input_ids`` and ``attention_mask`` (int32, batch x sequence, right-padded);
    output ``embedding`` (float32, batch x hidden). Weight names are those of Hugging
    Face's ``BertModel`` (with or without a ``bert.`` prefix).

    Raises:
        EmbedderError: a weight is missing or has the wrong shape.
    """
    from onnx import TensorProto, helper, numpy_helper

    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
    hidden = settings.hidden_size
    initializers: list[Any] = []

    def weight(name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        array = weights.get(prefix + name)
        if array is None:
            raise EmbedderError(f"model.safetensors has no tensor {prefix + name!r}")
        array = np.asarray(array, dtype=np.float32)
        if shape is not None and array.shape != shape:
            raise EmbedderError(
                f"model.safetensors: {prefix + name} has shape {array.shape}, expected {shape}"
            )
        return array

    def constant(name: str, array: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def add_and_normalize(dense: str, residual: str, module: str, out: str) -> Any:
        """LayerNorm(dense + bias + residual), the close of BERT's attention and FFN blocks."""
        return helper.make_node(
            "SkipLayerNormalization",
            [
                dense,
                residual,
                constant(out + "_gamma", weight(module + "LayerNorm.weight")),
                constant(out + "_beta", weight(module + "LayerNorm.bias")),
                constant(out + "_bias", weight(module + "dense.bias")),
            ],
            [out],
            domain=_MS,
            epsilon=settings.epsilon,
        )

    word = weight("embeddings.word_embeddings.weight")
    # Single texts have token type 0 everywhere: its embedding joins the positions'.
    positions = weight("embeddings.position_embeddings.weight")
    token_type = weight("embeddings.token_type_embeddings.weight")[0]
    nodes = [
        helper.make_node(
            "EmbedLayerNormalization",
            [
                "input_ids",
                "",
                constant("word_embeddings", word),
                constant("position_embeddings", positions + token_type),
                "",
                constant("embeddings_gamma", weight("embeddings.LayerNorm.weight", (hidden,))),
                constant("embeddings_beta", weight("embeddings.LayerNorm.bias", (hidden,))),
                "attention_mask",
            ],
            ["layer0", "mask_index"],
            domain=_MS,
            epsilon=settings.epsilon,
        )
    ]
    state = "layer0"
    for layer in range(settings.layers):
        p = f"encoder.layer.{layer}."
        q = f"l{layer}."
        qkv = np.concatenate(
            [weight(f"{p}attention.self.{n}.weight").T for n in ("query", "key", "value")],
            axis=1,
        )
        qkv_bias = np.concatenate(
            [weight(f"{p}attention.self.{n}.bias") for n in ("query", "key", "value")]
        )
        nodes += [
            helper.make_node(
                "Attention",
                [state, constant(q + "qkv", qkv), constant(q + "qkv_bias", qkv_bias), "mask_index"],
                [q + "attention"],
                domain=_MS,
                num_heads=settings.heads,
            ),
            helper.make_node(
                "MatMul",
                [
                    q + "attention",
                    constant(q + "out", weight(p + "attention.output.dense.weight").T),
                ],
                [q + "attention_out"],
            ),
            add_and_normalize(q + "attention_out", state, p + "attention.output.", q + "h1"),
            helper.make_node(
                "MatMul",
                [q + "h1", constant(q + "up", weight(p + "intermediate.dense.weight").T)],
                [q + "up_out"],
            ),
            helper.make_node(
                "BiasGelu",
                [q + "up_out", constant(q + "up_bias", weight(p + "intermediate.dense.bias"))],
                [q + "gelu"],
                domain=_MS,
            ),
            helper.make_node(
                "MatMul",
                [q + "gelu", constant(q + "down", weight(p + "output.dense.weight").T)],
                [q + "down_out"],
            ),
            add_and_normalize(q + "down_out", q + "h1", p + "output.", q + "h2"),
        ]
        state = q + "h2"
    # Pooling (the mean over the real tokens, or the [CLS] token's state), then unit
    # length when the model has a Normalize module.
    pooled = "embedding" if not settings.normalize else "pooled"
    if settings.pooling == "cls":
        nodes += [
            helper.make_node(
                "Gather", [state, constant("first", np.array([0], np.int64))], ["cls"], axis=1
            ),
            helper.make_node(
                "Squeeze", ["cls", constant("axis_1", np.array([1], np.int64))], [pooled]
            ),
        ]
    else:
        nodes += [
            helper.make_node("Cast", ["attention_mask"], ["mask_float"], to=TensorProto.FLOAT),
            helper.make_node(
                "Unsqueeze", ["mask_float", constant("axis_2", np.array([2], np.int64))], ["mask3"]
            ),
            helper.make_node("Mul", [state, "mask3"], ["masked"]),
            helper.make_node(
                "ReduceSum",
                ["masked", constant("axis_1", np.array([1], np.int64))],
                ["summed"],
                keepdims=0,
            ),
            helper.make_node("ReduceSum", ["mask3", "axis_1"], ["counts"], keepdims=0),
            helper.make_node(
                "Max", ["counts", constant("min_count", np.array(1e-9, np.float32))], ["divisor"]
            ),
            helper.make_node("Div", ["summed", "divisor"], [pooled]),
        ]
    if settings.normalize:
        nodes.append(helper.make_node("LpNormalization", ["pooled"], ["embedding"], axis=-1, p=2))
    tokens = ["batch", "sequence"]
    graph = helper.make_graph(
        nodes,
        "sentence_bert",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT32, tokens),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT32, tokens),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", hidden])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(_MS, 1)]
    )
    return bytes(model.SerializeToString())
