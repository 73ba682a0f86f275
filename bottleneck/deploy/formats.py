"""The files an exported model is written as, and how each is read back to predict.

| format | written as | ``bottleneck.json`` travels | runs with |
|---|---|---|---|
| ``keras`` | one ``.keras`` file | as a member of the zip | ``keras.saving.load_model`` (safe mode) |
| ``saved_model`` | a folder | as ``assets.extra/bottleneck.json`` | plain TensorFlow: ``tf.saved_model.load`` |
| ``onnx`` | one ``.onnx`` file | in the model's ``metadata_props`` | onnxruntime |
| ``litert`` | one ``.tflite`` file | as a metadata buffer of the flatbuffer | LiteRT's interpreter (``ai_edge_litert``) |

The three formats beside ``keras`` are written by Keras's own ``Model.export`` (and the
converters it calls: TensorFlow's SavedModel writer, tf2onnx, the LiteRT converter); this
module only adds the metadata, writes atomically, and reads each format back to one
interface, :class:`LoadedModel`, so that ``predict`` takes any of them.

A model file is a user's file: its metadata is size-checked and validated field by field
before it is used, an ONNX model that points at data outside itself is refused, and a
SavedModel (a TensorFlow program) whose graphs hold file or Python operations is refused
before TensorFlow loads it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from bottleneck.core.errors import BottleneckError
from bottleneck.core.files import atomic_output, check_folder_for, check_output
from bottleneck.core.userfiles import check_size, open_regular, read_bytes

META_NAME = "bottleneck.json"
MODEL_FORMAT = "bottleneck-model"
SAVED_MODEL_META = Path("assets.extra") / META_NAME  # TF Serving's folder for files that are not the graph's


@dataclasses.dataclass(frozen=True)
class ModelFormat:
    name: str
    suffix: str  # "" for a folder
    runs_with: str
    quantize: tuple[str, ...] = ()  # the --quantize values it takes


FORMATS = {f.name: f for f in (
    ModelFormat("keras", ".keras", "keras.saving.load_model (Keras 3, any backend)"),
    ModelFormat("saved_model", "", "tf.saved_model.load (TensorFlow; TF Serving)"),
    ModelFormat("onnx", ".onnx", "onnxruntime (and other ONNX runtimes)"),
    ModelFormat("litert", ".tflite", "LiteRT's interpreter (ai_edge_litert; TensorFlow Lite on phones)",
                quantize=("int8",)),
)}
# Operations that reach the file system or run Python, which a SavedModel of ours never holds
# (its checkpoint functions use SaveV2/RestoreV2 on its own variables/ folder): a graph that
# holds one is refused before TensorFlow loads it.
UNSAFE_OPS = frozenset({
    "ReadFile", "WriteFile", "MatchingFiles", "PyFunc", "PyFuncStateless", "EagerPyFunc", "ImmutableConst",
    "CreateSummaryFileWriter", "WriteSummary", "WriteScalarSummary", "WriteImageSummary", "WriteRawProtoSummary",
    "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "Save", "SaveSlices", "Restore", "RestoreSlice",
    "LoadAndRemapMatrix", "DatasetToTFRecord", "ExperimentalDatasetToTFRecord", "SaveDataset", "SaveDatasetV2",
    "TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset", "FixedLengthRecordDataset", "LoadDataset",
})


def format_of(path: str | Path, format: str | None = None) -> str:
    """The format asked for, or the one ``path`` names (its suffix; a folder: saved_model)."""
    path = Path(path)
    if format is not None:
        if format not in FORMATS:
            raise BottleneckError(f"unknown model format {format!r}", f"use one of {', '.join(FORMATS)}")
        return format
    by_suffix = {f.suffix: f.name for f in FORMATS.values() if f.suffix}
    if path.suffix.lower() in by_suffix:
        return by_suffix[path.suffix.lower()]
    if path.is_dir() or not path.suffix:
        return "saved_model"
    raise BottleneckError(f"{path}: the name says no model format ({', '.join(by_suffix)}, or a folder for a "
                          "SavedModel)", "pass --format, or a name ending in one of those")


def check_model_output(path: str | Path, format: str, overwrite: bool = False) -> Path:
    """Before any work: ``path`` can take a model in ``format`` (its name fits the format, an
    existing one is kept unless ``overwrite``; a folder is replaced only if it is a SavedModel)."""
    f = FORMATS[format]
    path = Path(path).expanduser()
    if f.suffix:
        return check_output(path, overwrite=overwrite, suffixes=(f.suffix,), what=f"{format} model")
    if path.suffix.lower() in {g.suffix for g in FORMATS.values() if g.suffix}:
        raise BottleneckError(f"--out {path}: a SavedModel is a folder, and this name says another format",
                              f"pass --out {path.with_suffix('')} (a folder name)")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise BottleneckError(f"--out {path} exists; it is kept", "pass another --out, remove it, or add --force "
                                                                       "to replace it")
        if path.is_symlink() or not (path / "saved_model.pb").is_file():
            raise BottleneckError(f"--out {path} exists and is not a SavedModel folder; --force replaces only a "
                                  "SavedModel", "pass another --out")
    check_folder_for(path)  # the SavedModel's own folder is made only when it is complete (save)
    return path


def save(model, meta: dict, out: Path, format: str, overwrite: bool = False, convert_options: dict | None = None) -> None:
    """Write the Keras ``model`` with ``meta`` to ``out`` in ``format``: complete or absent.
    ``convert_options`` go to the converter (LiteRT's quantization)."""
    text = json.dumps(meta, indent=1, default=str)
    options = dict(convert_options or {})
    try:
        if format == "saved_model":
            _save_folder(model, text, Path(out), overwrite)
            return
        with atomic_output(out, suffix=FORMATS[format].suffix, replace=overwrite) as tmp:
            if format == "keras":
                model.save(tmp)
                with zipfile.ZipFile(tmp, "a") as z:
                    z.writestr(META_NAME, text)
            elif format == "onnx":
                _keras_export(model, tmp, "onnx", options)
                _onnx_add_meta(tmp, text)
            else:
                _keras_export(model, tmp, "litert", options)
                _tflite_add_meta(tmp, text)
    except FileExistsError:
        raise BottleneckError(f"{out} was written by someone else while this export ran; it is kept",
                              "run the export again with another --out (or --force to replace it)") from None


def check_converter(format: str) -> None:
    """Before any work: the ONNX and LiteRT converters Keras calls are TensorFlow's, so those
    formats need Keras on the TensorFlow backend."""
    import keras

    if format in ("onnx", "litert") and keras.backend.backend() != "tensorflow":
        raise BottleneckError(f"--format {format} is written through TensorFlow's converters; this process runs "
                              f"Keras on {keras.backend.backend()}",
                              "export with KERAS_BACKEND=tensorflow (the .keras format works on every backend)")


def _keras_export(model, path: Path, format: str, options: dict) -> None:
    import contextlib
    import io

    shape = tuple(model.inputs[0].shape[1:])
    model.predict_on_batch(np.zeros((1, *shape), model.inputs[0].dtype))  # tf2onnx traces a model that has run
    with contextlib.redirect_stdout(io.StringIO()):  # the converters print their progress
        model.export(str(path), format=format, verbose=False, **options)


def _save_folder(model, text: str, out: Path, overwrite: bool) -> None:
    """A SavedModel is a folder: written in a fresh folder beside ``out``, then renamed into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    old = None
    try:
        model.export(str(tmp), format="tf_saved_model", verbose=False)
        (tmp / SAVED_MODEL_META.parent).mkdir(exist_ok=True)
        (tmp / SAVED_MODEL_META).write_text(text)
        if out.exists() and overwrite:  # checked to be a SavedModel folder (check_model_output)
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "model")
        try:
            os.rename(tmp, out)
        except OSError:
            if old is not None:  # put the old one back: no finished work is lost
                os.replace(old / "model", out)
            if out.exists():
                raise FileExistsError(out) from None
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _onnx_add_meta(path: Path, text: str) -> None:
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {META_NAME: text})
    onnx.save(model, str(path))


def _tflite_add_meta(path: Path, text: str) -> None:
    """Add ``text`` as a named metadata buffer (the flatbuffer's own place for it)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(text.encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = META_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (META_NAME, META_NAME.encode())] + [entry]
    flatbuffer_utils.write_model(model, str(path))


# Reading back --------------------------------------------------------------------------------------------------

TASKS = ("single_label", "multi_label", "regression", "segmentation", "detection")
CANVAS_TASKS = ("segmentation", "detection")  # models whose input is a letterboxed canvas
MAX_INPUT_SIZE = 4096  # pixels a side: far above any base's input, far below what would exhaust memory
TODO = "export one with `bottleneck export ... --out model.keras` (or .onnx, .tflite, a folder for a SavedModel)"


def read_meta(path: str | Path) -> dict:
    """The ``bottleneck.json`` of an exported model in any format, checked (its size before it
    is read, then every field :class:`LoadedModel` uses)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise BottleneckError(f"model file {path} does not exist", "export one with `bottleneck export`")
    format = format_of(path)
    try:
        text = _READERS[format](path)
        meta = json.loads(text)
    except BottleneckError:
        raise
    except FileNotFoundError as e:
        raise BottleneckError(f"{path} is not a model exported by bottleneck ({e.filename or e} is missing)",
                              TODO) from None
    except Exception as e:  # every parser here raises its own types for a damaged file (zip, protobuf, flatbuffer)
        raise BottleneckError(f"{path} is not a model exported by bottleneck ({type(e).__name__}: {str(e)[:200]})",
                              TODO) from None
    _check_meta(meta, path)
    return meta


def _keras_meta(path: Path) -> bytes:
    with open_regular(path, "model file") as f, zipfile.ZipFile(f) as z:
        info = z.getinfo(META_NAME)
        check_size(f"{path}!{META_NAME}", info.file_size, "model metadata")
        return z.read(info)


def _saved_model_meta(path: Path) -> bytes:
    return read_bytes(path / SAVED_MODEL_META, "model metadata")


def _onnx_meta(path: Path) -> str:
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load_model_from_string(read_bytes(path, "model file"))
    outside = [t.name for t in model.graph.initializer if uses_external_data(t)]
    if outside:  # such a tensor names a file to read, anywhere: ours never have one
        raise BottleneckError(f"{path} keeps tensors in other files ({', '.join(outside[:3])}); an exported model "
                              "holds all of its weights itself", TODO)
    props = {p.key: p.value for p in model.metadata_props}
    if META_NAME not in props:
        raise KeyError(META_NAME)
    return props[META_NAME]


def _tflite_meta(path: Path) -> bytes:
    from tensorflow.lite.python import schema_py_generated as schema

    data = read_bytes(path, "model file")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError("not a LiteRT flatbuffer (no TFL3 identifier)")
    model = schema.Model.GetRootAs(data, 0)
    for k in range(model.MetadataLength()):
        entry = model.Metadata(k)
        if entry.Name() == META_NAME.encode():
            raw = model.Buffers(entry.Buffer()).DataAsNumpy()
            return bytes(raw) if not isinstance(raw, int) else b""
    raise KeyError(META_NAME)


_READERS = {"keras": _keras_meta, "saved_model": _saved_model_meta, "onnx": _onnx_meta, "litert": _tflite_meta}


def _check_meta(meta, path) -> None:
    """Every field predicting needs, of the type it needs; a clear error naming the field otherwise."""
    def bad(what: str):
        raise BottleneckError(f"{path} is not a usable bottleneck model: {META_NAME} {what}", TODO)

    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        bad(f"does not say format {MODEL_FORMAT!r}")
    if meta.get("task") not in TASKS:
        bad(f"names the task {meta.get('task')!r}; this version predicts {', '.join(TASKS)}")
    size = (meta.get("input") or {}).get("size") if isinstance(meta.get("input"), dict) else None
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_INPUT_SIZE:
        bad(f"gives the input size {size!r}; it must be a whole number of pixels from 1 to {MAX_INPUT_SIZE}")
    names = meta.get("output_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        bad("has no list of output names")
    if meta["task"] in CANVAS_TASKS:
        canvas = meta["input"].get("canvas")
        sides = isinstance(canvas, list) and len(canvas) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_INPUT_SIZE for v in canvas)
        if not sides or size > max(canvas):
            bad(f"gives the canvas {str(canvas)[:60]!r}: [height, width] in pixels, the long side {size} fitting")
    if meta["task"] == "detection":
        nms = meta.get("nms")
        numbers = isinstance(nms, dict) and all(
            isinstance(nms.get(k), (int, float)) and not isinstance(nms.get(k), bool) and 0 <= nms[k] <= limit
            for k, limit in (("iou_threshold", 1), ("score_threshold", 1), ("max_detections", 10000),
                             ("pre_nms", 1000000)))
        if not numbers:
            bad("does not give its non-maximum suppression (nms: iou_threshold, score_threshold, max_detections, "
                "pre_nms)")
    if meta["task"] == "multi_label":
        n, groups, t = meta.get("independent"), meta.get("groups"), meta.get("thresholds")
        if not isinstance(n, int) or isinstance(n, bool) or not isinstance(groups, dict) or not all(
                isinstance(m, list) and m and all(isinstance(x, str) for x in m) for m in groups.values()):
            bad("does not describe its labels (independent, groups)")
        if n < 0 or n + sum(len(m) for m in groups.values()) != len(names):
            bad(f"describes {n} independent labels and groups of {[len(m) for m in groups.values()]}, "
                f"but names {len(names)} outputs")
        if not (isinstance(t, (int, float)) and not isinstance(t, bool) or isinstance(t, list) and len(t) == n
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in t)):
            bad(f"gives thresholds {str(t)[:60]!r}: one number, or one per independent label")


@dataclasses.dataclass
class LoadedModel:
    """An exported model in any format and what it predicts: ``run`` maps a uint8 batch
    (N, size, size, 3) to the model's outputs (N, width)."""

    run: Callable[[np.ndarray], np.ndarray]
    meta: dict
    path: Path
    format: str = "keras"
    keras_model: object = None  # the Keras model, for the keras format

    @property
    def image_size(self) -> int:
        """The input's side; for segmentation, the long side an image is resized to."""
        return int(self.meta["input"]["size"])

    @property
    def input_shape(self) -> tuple[int, int]:
        """(height, width) of the model's input: the canvas for segmentation."""
        canvas = self.meta["input"].get("canvas") if self.meta["task"] in CANVAS_TASKS else None
        return tuple(canvas) if canvas else (self.image_size, self.image_size)

    def decode(self, outputs: np.ndarray) -> list:
        """Each row's prediction: the class, the set of labels, or the values."""
        names = self.meta["output_names"]
        kind = self.meta["task"]
        if kind == "single_label":
            return [names[i] for i in outputs.argmax(axis=1)]
        if kind == "segmentation":  # a class id per pixel of the canvas
            return list(outputs.argmax(axis=-1).astype(np.uint8))
        if kind == "multi_label":
            n = self.meta["independent"]
            t = np.asarray(self.meta["thresholds"] if isinstance(self.meta["thresholds"], list)
                           else [self.meta["thresholds"]] * n)
            out = []
            for row in outputs:
                chosen = [names[j] for j in range(n) if row[j] >= t[j]]
                start = n
                for members in self.meta["groups"].values():
                    chosen.append(members[int(np.argmax(row[start:start + len(members)]))])
                    start += len(members)
                out.append(chosen)
            return out
        return [dict(zip(names, map(float, row))) for row in outputs]


def load_model(path: str | Path) -> LoadedModel:
    """An exported model of any format: a function from pixels to outputs, and its metadata,
    checked against each other. A refusal or a damaged file is a clear error."""
    path = Path(path)
    meta = read_meta(path)
    format = format_of(path)
    try:
        run, inputs, outputs, keras_model = _OPENERS[format](path)
    except BottleneckError:
        raise
    except Exception as e:  # each runtime raises many types for a refused or damaged file
        raise BottleneckError(f"{LOADERS[format]} could not load {path} ({type(e).__name__}: {str(e)[:300]})",
                              "export the model again with `bottleneck export`; a file that needs unsafe "
                              "deserialization (Lambda layers, custom code) is never loaded") from None
    loaded = LoadedModel(_guarded(run, path, format), meta, path, format, keras_model)
    (h, w), width = loaded.input_shape, len(meta["output_names"])
    inputs = [tuple(None if d in (None, -1) or isinstance(d, str) else int(d) for d in s) for s in inputs]
    outputs = [tuple(None if d in (None, -1) or isinstance(d, str) else int(d) for d in s) for s in outputs]
    per_pixel = meta["task"] == "segmentation"
    width += 4 if meta["task"] == "detection" else 0  # a box, then the classes' scores
    if [s[1:] for s in inputs] != [(h, w, 3)] or len(outputs) != 1 or outputs[0][-1] != width or (
            per_pixel and outputs[0][1:] != (h, w, width)):
        raise BottleneckError(f"{path}: the {format} model takes {inputs} and gives {outputs}, but {META_NAME} says "
                              f"({h}, {w}, 3) images and {width} outputs" + (" per pixel" if per_pixel else ""),
                              "export the model again with `bottleneck export`")
    return loaded


def _guarded(run, path: Path, format: str):
    """``run``, with a runtime's failure on a damaged model (a graph that loads, then cannot
    run) said as a clear error."""
    def guarded(pixels: np.ndarray) -> np.ndarray:
        try:
            return run(pixels)
        except (BottleneckError, MemoryError, KeyboardInterrupt):
            raise
        except Exception as e:
            raise BottleneckError(f"{LOADERS[format]} could not run {path} ({type(e).__name__}: {str(e)[:300]})",
                                  "export the model again with `bottleneck export`") from None

    return guarded


def _open_keras(path: Path):
    import keras

    model = keras.saving.load_model(path, safe_mode=True)
    return (lambda pixels: np.asarray(model.predict_on_batch(pixels)), [tuple(t.shape) for t in model.inputs],
            [tuple(t.shape) for t in model.outputs], model)


def _open_saved_model(path: Path):
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString(read_bytes(path / "saved_model.pb", "model file"))
    ops = set()
    for graph in proto.meta_graphs:
        ops.update(n.op for n in graph.graph_def.node)
        for function in graph.graph_def.library.function:
            ops.update(n.op for n in function.node_def)
    unsafe = sorted(ops & UNSAFE_OPS)
    if unsafe:
        raise BottleneckError(f"{path}: its graph holds operations that read or write files or run Python "
                              f"({', '.join(unsafe[:5])}); an exported model never does",
                              "load SavedModels only from people you trust; export the model again here")
    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]
    (name, spec), = serve.structured_input_signature[1].items()
    outs = serve.structured_outputs
    if len(outs) != 1:
        raise BottleneckError(f"{path}: the SavedModel gives {len(outs)} outputs; an exported model gives one",
                              TODO)
    (out_name, out_spec), = outs.items()

    def run(pixels, loaded=loaded):  # (holding `loaded`: its variables live as long as this function)
        return serve(**{name: tf.constant(pixels)})[out_name].numpy()

    return run, [tuple(spec.shape)], [tuple(out_spec.shape)], None


def _open_onnx(path: Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(read_bytes(path, "model file"), providers=["CPUExecutionProvider"])
    (inp,), outs = session.get_inputs(), session.get_outputs()
    return (lambda pixels: session.run(None, {inp.name: pixels})[0], [tuple(inp.shape)],
            [tuple(o.shape) for o in outs], None)


def _open_litert(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=read_bytes(path, "model file"))
    interpreter.allocate_tensors()  # a graph that cannot be prepared fails here, on loading
    (inp,), outs = interpreter.get_input_details(), interpreter.get_output_details()
    shape = [None]

    def run(pixels):
        if shape[0] != pixels.shape:  # LiteRT runs one shape at a time: the batch is resized when it changes
            interpreter.resize_tensor_input(inp["index"], pixels.shape)
            interpreter.allocate_tensors()
            shape[0] = pixels.shape
        interpreter.set_tensor(inp["index"], pixels.astype(inp["dtype"], copy=False))
        interpreter.invoke()
        out = interpreter.get_output_details()[0]
        values = interpreter.get_tensor(out["index"])
        scale, zero = out.get("quantization", (0.0, 0))
        return (values.astype(np.float32) - zero) * scale if scale else values

    return run, [tuple(inp["shape_signature"])], [tuple(o["shape_signature"]) for o in outs], None


LOADERS = {"keras": "Keras", "saved_model": "TensorFlow", "onnx": "onnxruntime", "litert": "LiteRT"}
_OPENERS = {"keras": _open_keras, "saved_model": _open_saved_model, "onnx": _open_onnx, "litert": _open_litert}
