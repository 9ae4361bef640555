"""Torch functions traced once and replayed as straight-line numpy code (one design, no gradients).

On CPU a torch op on a handful of values costs several microseconds of dispatch, a numpy ufunc about
a third of that, and device code spends much of its time on subexpressions of the parameters alone.
`Traced` runs a function once under a `TorchFunctionMode` that records every op depending on the
inputs (ops on parameters alone run once and become constants) and compiles the record into a
numpy function, without repeated subexpressions, without ops whose result is not used, and without
multiplications by one and selections by a constant condition.  Ops that numpy computes exactly as
torch does (arithmetic, comparisons, selections) become numpy calls; the others (exp, log, sqrt,
pow ...: torch's vectorised kernels round differently from numpy's, and by memory layout) call the
same torch function on the arrays.  While tracing, the record is replayed alongside and each op must
give torch's result exactly, else the function stays in torch (on the corpus decks, every step and
error is unchanged).
In-place arithmetic on a tensor no other tensor shares (forward differences on a clone) is
replayed as a new value.

A Python branch on an input-derived value (``bool``, ``torch.equal``) becomes a guard: where the
outcome differs, the replay raises `GuardFailed` and the function is traced again along that path
(past `MAX_PATHS`, it runs in torch).  Whatever else cannot be replayed (a float taken from an input,
an in-place op on a shared tensor, an op without a translation) leaves the function in torch.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = ["Traced", "GuardFailed", "Untraceable", "MAX_PATHS"]

MAX_PATHS = 4  # traced paths per function (one per outcome of its guards seen so far)


class GuardFailed(Exception):
    """A replay reached a branch whose outcome differs from the traced one."""


class Untraceable(Exception):
    """The function does something the tracer cannot replay on numpy."""


_DTYPES = {torch.float64: np.float64, torch.float32: np.float32, torch.bool: np.bool_,
           torch.int64: np.int64, torch.int32: np.int32}

# what a shape query returns does not depend on the values
_STATIC = {"dim", "size", "numel", "is_floating_point", "__len__", "is_complex", "element_size",
           "is_inference", "get_device"}
_STATIC_PROPERTIES = {"shape", "dtype", "ndim", "device", "layout", "requires_grad", "is_cuda",
                      "is_sparse", "grad_fn"}
# fresh tensors whose values do not depend on the argument's values
_CREATION = {"zeros_like", "ones_like", "full_like", "new_zeros", "new_ones", "new_full", "new_tensor",
             "zeros", "ones", "full", "eye", "arange", "tensor"}
_GUARDS = {"__bool__", "equal"}
# in-place arithmetic, replayed as a new value
_IN_PLACE = {"add_": "+", "__iadd__": "+", "sub_": "-", "__isub__": "-", "mul_": "*", "__imul__": "*",
             "div_": "/", "__itruediv__": "/"}


def _binary(op: str, reverse: bool = False):
    """a op b (reverse: b op a); an alpha other than 1 is replayed in torch (see `_VIA_TORCH`)."""
    if reverse:
        return lambda a, b, alpha="1": f"({b} {op} {a})"
    return lambda a, b, alpha="1": f"({a} {op} {b})"


def _call(fn: str):
    return lambda *args: f"{fn}({', '.join(args)})"


def _reduction(fn: str):
    def emit(x, dim=None, keepdim="False"):
        return f"{fn}({x}, axis={dim}, keepdims={keepdim})"
    return emit


def _clamp(x, min=None, max=None):  # noqa: A002  (torch's keyword names)
    if min not in (None, "None"):
        x = f"_maximum({x}, {min})"
    if max not in (None, "None"):
        x = f"_minimum({x}, {max})"
    return x


# numpy computes these exactly as torch (correctly rounded, or no rounding at all)
_UNARY = {"abs": "_abs", "__abs__": "_abs", "sign": "_sign", "trunc": "_trunc", "floor": "_floor",
          "isnan": "_isnan", "isfinite": "_isfinite", "neg": "_negative", "__neg__": "_negative",
          "logical_not": "_logical_not", "__invert__": "_invert", "square": "_square"}
# replayed by calling the traced torch function itself on the arrays
_VIA_TORCH = {"exp", "log", "sqrt", "rsqrt", "sin", "cos", "tanh", "atan", "atan2", "log1p", "expm1",
              "logaddexp", "pow", "__pow__", "__rpow__", "sum", "matmul", "__matmul__", "__rmatmul__",
              "reciprocal", "sigmoid", "log2", "log10", "exp2", "sinh", "cosh", "asin", "acos", "erf",
              "addcmul", "addcdiv", "lerp"}  # (the last three: torch's kernels fuse a multiply-add)

_TRANSLATIONS: dict[str, Callable[..., str]] = {
    **{name: _call(fn) for name, fn in _UNARY.items()},
    **{name: _binary(op) for names, op in ((("add", "__add__"), "+"), (("sub", "__sub__"), "-"),
                                            (("mul", "__mul__", "multiply"), "*"),
                                            (("div", "__truediv__", "true_divide", "divide"), "/"),
                                            (("lt", "__lt__"), "<"),
                                            (("le", "__le__"), "<="), (("gt", "__gt__"), ">"),
                                            (("ge", "__ge__"), ">="), (("eq", "__eq__"), "=="),
                                            (("ne", "__ne__"), "!="), (("__and__", "logical_and"), "&"),
                                            (("__or__", "logical_or"), "|"), (("__xor__",), "^"))
       for name in names},
    **{name: _binary(op, reverse=True) for name, op in (("__radd__", "+"), ("__rsub__", "-"), ("rsub", "-"),
                                                        ("__rmul__", "*"), ("__rtruediv__", "/"), ("__rdiv__", "/"))},
    "maximum": _call("_maximum"), "minimum": _call("_minimum"), "where": _call("_where"), "clamp": _clamp,
    "clip": _clamp,
    "clamp_min": lambda x, m: _clamp(x, min=m), "clamp_max": lambda x, m: _clamp(x, max=m),
    "nan_to_num": lambda x, nan="0.0", posinf="None", neginf="None":
        f"_nan_to_num({x}, nan={nan}, posinf={posinf}, neginf={neginf})",
    "any": _reduction("_any"), "all": _reduction("_all"),
    "amax": _reduction("_amax"), "amin": _reduction("_amin"),
    "cat": lambda xs, dim="0": f"_concatenate({xs}, axis={dim})",
    "concat": lambda xs, dim="0": f"_concatenate({xs}, axis={dim})",
    "movedim": lambda x, a, b: f"_moveaxis({x}, {a}, {b})",
    "transpose": lambda x, a, b: f"_swapaxes({x}, {a}, {b})",
    "broadcast_tensors": lambda *xs: f"tuple(_broadcast_arrays({', '.join(xs)}))",
    "__getitem__": lambda x, index: f"{x}[{index}]",
}
# the result has the traced shape (views and copies alike, values unchanged)
_RESHAPE = {"reshape", "view", "unsqueeze", "squeeze", "flatten", "view_as", "reshape_as"}
_EXPAND = {"expand", "expand_as", "broadcast_to"}
# the result has the traced dtype (values unchanged otherwise)
_CONVERT = {"to", "as_tensor", "double", "float", "type_as", "clone", "detach", "contiguous"}

_NAMESPACE: dict[str, Any] = {
    **{fn: getattr(np, fn[1:]) for fn in set(_UNARY.values()) | {
        "_maximum", "_minimum", "_where", "_nan_to_num", "_any", "_all",
        "_amax", "_amin", "_concatenate", "_moveaxis", "_swapaxes", "_broadcast_arrays",
        "_broadcast_to", "_array_equal", "_asarray"}},
    "_inf": math.inf, "_nan": math.nan, "GuardFailed": GuardFailed,
}


def _tensor(a: np.ndarray) -> Tensor:
    """A tensor sharing a's memory (a copy of a read-only broadcast view)."""
    return torch.from_numpy(a if a.flags.writeable else np.array(a))


def _updated(a: np.ndarray, index: Any, value: Any) -> np.ndarray:
    """A copy of a with a[index] = value."""
    a = np.array(a)
    a[index] = value
    return a


_NAMESPACE.update(_T=_tensor, _updated=_updated)


def _func_name(func) -> str:
    name = getattr(func, "__name__", "")
    if name == "__get__":  # a property: Tensor.shape ...
        return "." + getattr(getattr(func, "__self__", None), "__name__", "")
    return name


class _Recorder(TorchFunctionMode):
    """Records the ops that depend on the traced inputs as numpy code (each checked against torch)."""

    def __init__(self, inputs: dict[str, Tensor]):
        super().__init__()
        self.vars: dict[int, str] = {}  # id of an input-derived tensor -> its variable
        self.keep: list[Any] = []  # every tensor given a variable (so ids stay unique)
        self.env: dict[str, Any] = {}  # variable or constant -> its value in the replay of the trace
        self.lines: list[tuple[list[str], str]] = []  # (variables assigned, line)
        self._same: dict[str, list[str]] = {}  # expression -> the variables that hold it
        self._parents: dict[int, tuple[Tensor, str]] = {}  # id of an indexed view -> (base, index code)
        self.consts: dict[str, Any] = {}
        self._const_ids: dict[int, str] = {}
        for name, t in inputs.items():
            self._bind(t, name)
            self.env[name] = t.numpy()

    def _bind(self, t: Tensor, name: str) -> None:
        self.vars[id(t)] = name
        self.keep.append(t)

    def _const(self, value: Any, as_tensor: bool = False) -> str:
        """The name of a constant of the trace (a tensor as a numpy copy unless as_tensor)."""
        key = (id(value), as_tensor)
        if key not in self._const_ids:
            self.keep.append(value)  # (its id stays its own)
            name = f"_c{len(self.consts)}"
            if isinstance(value, Tensor):
                value = value.detach() if as_tensor else value.detach().numpy().copy()
            self.consts[name] = self.env[name] = value
            self._const_ids[key] = name
        return self._const_ids[key]

    def _tainted(self, value: Any) -> bool:
        if isinstance(value, Tensor):
            return id(value) in self.vars
        if isinstance(value, (list, tuple)):
            return any(self._tainted(v) for v in value)
        if isinstance(value, slice):
            return any(self._tainted(v) for v in (value.start, value.stop, value.step))
        return False

    def code(self, value: Any) -> str:
        """A Python expression for an argument of a recorded op."""
        if isinstance(value, Tensor):
            return self.vars.get(id(value)) or self._const(value)
        if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
            return repr(value)
        if isinstance(value, float):
            return repr(value) if math.isfinite(value) else ("_nan" if math.isnan(value) else
                                                              ("_inf" if value > 0 else "(-_inf)"))
        if isinstance(value, torch.dtype):
            return self._const(_DTYPES[value])
        if isinstance(value, slice):
            return f"slice({self.code(value.start)}, {self.code(value.stop)}, {self.code(value.step)})"
        if value is Ellipsis:
            return "..."
        if isinstance(value, (list, tuple)):
            return "(" + "".join(f"{self.code(v)}, " for v in value) + ")"
        if isinstance(value, torch.device):
            return "None"
        raise Untraceable(f"argument of type {type(value).__name__}")

    def torch_code(self, value: Any) -> str:
        """`code` for an argument of an op replayed in torch: arrays as tensors."""
        if isinstance(value, Tensor):
            return f"_T({self.vars[id(value)]})" if id(value) in self.vars else self._const(value, as_tensor=True)
        if isinstance(value, (list, tuple)):
            return "(" + "".join(f"{self.torch_code(v)}, " for v in value) + ")"
        if isinstance(value, torch.dtype):
            return self._const(value)
        return self.code(value)

    def _emit(self, expr: str, out: Any) -> None:
        """Assign expr to new variables for the op's output(s); run on the replay's values of its
        operands, it must give torch's result exactly."""
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        if not all(isinstance(o, Tensor) for o in outs):
            raise Untraceable("an op returned something other than tensors")
        if expr in self._same:  # computed before from the same variables (every op is pure)
            for o, name in zip(outs, self._same[expr]):
                self._bind(o, name)
            return
        names = [f"_v{len(self.lines)}_{k}" for k in range(len(outs))]
        target = ", ".join(names) + ("," if isinstance(out, (tuple, list)) else "")
        with np.errstate(all="ignore"):
            values = eval(expr, _NAMESPACE, self.env)
        values = list(values) if isinstance(out, (tuple, list)) else [values]
        if len(values) != len(outs):
            raise Untraceable("the numpy op returned another number of results")
        casts = []
        self._same[expr] = names
        for name, o, val in zip(names, outs, values):
            val, want = np.asarray(val), o.detach().numpy()
            if val.shape != want.shape or want.dtype.type not in _DTYPES.values():
                raise Untraceable(f"numpy gave shape {val.shape}, torch {want.shape} ({expr})")
            if val.dtype != want.dtype:
                casts.append(([name], f"{name} = {name}.astype({self._const(want.dtype.type)})"))
                val = val.astype(want.dtype)
            if not np.array_equal(val, want, equal_nan=want.dtype.kind == "f"):
                raise Untraceable(f"numpy differs from torch in {expr}")
            self.env[name] = val  # (the replay's own array: torch's kernels may round by memory layout)
            self._bind(o, name)
        self.lines.append((names, f"{target} = {expr}"))
        self.lines += casts

    def _in_place(self, name: str, args: tuple, kwargs: dict) -> None:
        """An in-place op on an input-derived tensor, recorded as a new value (and, for a view taken
        by indexing, its base updated); no other tensor may see the change."""
        target = args[0]
        if id(target) not in self.vars or kwargs:
            raise Untraceable(f"{name} on a constant or with options")
        parent = self._parents.get(id(target))
        storage = target.untyped_storage().data_ptr()
        allowed = {id(target), *(id(a) for a in args), *((id(parent[0]),) if parent else ())}
        if any(isinstance(t, Tensor) and id(t) in self.vars and id(t) not in allowed
               and t.untyped_storage().data_ptr() == storage for t in self.keep):
            raise Untraceable(f"{name} on a tensor that other views share")
        old = self.vars[id(target)]
        if name == "__setitem__":
            self._emit(f"_updated({old}, {self.code(args[1])}, {self.code(args[2])})", target)
        else:
            self._emit(f"({old} {_IN_PLACE[name]} {self.code(args[1])})", target)
        if parent is not None:
            base, index = parent
            self._emit(f"_updated({self.vars[id(base)]}, {index}, {self.vars[id(target)]})", base)

    def _alias(self, name: str, args: tuple, kwargs: dict, out: Tensor) -> bool:
        """Bind out to the operand it equals bit for bit whatever the inputs (x * 1, x / 1, x - 0,
        a selection by a constant condition); True if it does."""
        def const(x: Any, value: float) -> bool:
            if isinstance(x, Tensor):
                return id(x) not in self.vars and x.dtype == out.dtype and bool((x == value).all())
            return isinstance(x, (int, float)) and not isinstance(x, bool) and x == value

        def same(x: Any) -> bool:
            return (isinstance(x, Tensor) and id(x) in self.vars and x.shape == out.shape
                    and x.dtype == out.dtype)

        if kwargs or not isinstance(out, Tensor) or len(args) < 2:
            return False
        pick = None
        if name in ("mul", "__mul__", "__rmul__", "multiply"):
            pick = args[0] if const(args[1], 1.0) else args[1] if const(args[0], 1.0) else None
        elif name in ("div", "__truediv__", "true_divide", "divide", "sub", "__sub__"):
            pick = args[0] if const(args[1], 1.0 if "sub" not in name else 0.0) else None
        elif name == "where" and len(args) == 3 and isinstance(args[0], Tensor) and id(args[0]) not in self.vars:
            pick = args[1] if bool(args[0].all()) else args[2] if not bool(args[0].any()) else None
        if pick is None or not same(pick):
            return False
        self._bind(out, self.vars[id(pick)])
        return True

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _func_name(func)
        out = func(*args, **kwargs)
        if name in _STATIC or name[1:] in _STATIC_PROPERTIES:
            return out
        if not (self._tainted(args) or self._tainted(tuple(kwargs.values()))):
            return out  # parameters alone: a constant of the trace
        if name in _CREATION:
            return out
        if name in _IN_PLACE or name == "__setitem__":
            self._in_place(name, args, kwargs)
            return out
        if name in _GUARDS:
            a = [self.code(x) for x in args]
            test = f"bool({a[0]})" if name == "__bool__" else f"_array_equal({a[0]}, {a[1]})"
            self.lines.append(([], f"if {test} is not {bool(out)}: raise GuardFailed"))
            return out
        if self._alias(name, args, kwargs, out):
            return out
        if name in _VIA_TORCH or kwargs.get("alpha", 1) != 1:  # (add/sub with alpha: fused too)
            code = [self.torch_code(a) for a in args] + [f"{k}={self.torch_code(v)}" for k, v in kwargs.items()]
            self._emit(f"{self._const(func)}({', '.join(code)}).numpy()", out)
        elif name == "unbind":  # (one indexing per part: cheaper than moving the axis)
            dim = (args[1] if len(args) > 1 else kwargs.get("dim", 0)) % args[0].dim()
            for k, part in enumerate(out):
                self._emit(f"{self.code(args[0])}[{self._const((slice(None),) * dim + (k,))}]", part)
        elif name == "stack":  # concatenate along a new axis (np.stack costs ~5 us in Python)
            dim = (args[1] if len(args) > 1 else kwargs.get("dim", 0)) % out.dim()
            index = self._const((slice(None),) * dim + (None,))
            parts = "".join(f"{self.code(x)}[{index}], " for x in args[0])
            self._emit(f"_concatenate(({parts}), axis={dim})", out)
        elif name in _RESHAPE | _CONVERT and isinstance(args[0], Tensor) and id(args[0]) in self.vars \
                and args[0].shape == out.shape and args[0].dtype == out.dtype:
            self._bind(out, self.vars[id(args[0])])  # values unchanged (in-place ops are replayed as copies)
        elif name in _RESHAPE:
            self._emit(f"{self.code(args[0])}.reshape({tuple(out.shape)})", out)
        elif name in _EXPAND:
            x = args[0]
            if x.shape == out.shape and x.dtype == out.dtype:
                self._bind(out, self.vars[id(x)])
            elif out.dtype.is_floating_point:  # (x * 1 is x exactly; np.broadcast_to costs ~5 us)
                self._emit(f"({self.code(x)} * {self._const(torch.ones(out.shape, dtype=out.dtype))})", out)
            else:
                self._emit(f"_broadcast_to({self.code(x)}, {tuple(out.shape)})", out)
        elif name in _CONVERT and isinstance(args[0], Tensor):
            self._emit(f"_asarray({self.code(args[0])}, {self.code(out.dtype)})", out)
        elif name in _TRANSLATIONS:
            args_code = [self.code(a) for a in args]
            kwargs_code = {k: self.code(v) for k, v in kwargs.items()}
            try:
                expr = _TRANSLATIONS[name](*args_code, **kwargs_code)
            except TypeError as exc:
                raise Untraceable(f"{name}: {exc}") from None
            self._emit(expr, out)
            if name == "__getitem__" and out.untyped_storage().data_ptr() == args[0].untyped_storage().data_ptr():
                self._parents[id(out)] = (args[0], args_code[1])
        else:
            raise Untraceable(f"no numpy translation of {name}")
        return out


def _live(lines: list[tuple[list[str], str]], results: list[str]) -> list[str]:
    """The lines that the results or a guard depend on, in order."""
    needed, kept = set(results), []
    for targets, line in reversed(lines):
        if not targets or needed.intersection(targets):
            kept.append(line)
            rhs = line.split(":", 1)[0] if not targets else line.split(" = ", 1)[1]
            needed.update(re.findall(r"\b_v\d+_\d+\b", rhs))
    return kept[::-1]


def _flat(out: Any) -> tuple[list[Any], Callable[[list[Any]], Any]]:
    """The tensors (or None) of a result that is a tensor, None or a tuple of these, and how to
    rebuild the result from them."""
    if isinstance(out, tuple):
        return list(out), tuple
    return [out], lambda xs: xs[0]


class Traced:
    """fn(*tensors) -> a tensor, None or a tuple of these, called on numpy arrays: replayed from
    its numpy traces, traced on the first call of each new path, run in torch where it cannot be
    traced.  fn must not depend on anything but its arguments and constants."""

    def __init__(self, fn: Callable[..., Any], names: tuple[str, ...]):
        self.fn = fn
        self.names = names
        self.paths: list[Callable[..., Any]] = []
        self.untraceable: str | None = None  # why not, once tracing failed

    def __call__(self, *arrays: np.ndarray) -> Any:
        for path in self.paths:
            try:
                return path(*arrays)
            except GuardFailed:
                continue
        inputs = [torch.from_numpy(a) for a in arrays]
        if self.untraceable is None and len(self.paths) < MAX_PATHS:
            try:
                return self._trace(arrays, inputs)
            except Untraceable as exc:
                self.untraceable = str(exc)
        return self._eager(arrays, inputs)

    def _eager(self, arrays, inputs) -> Any:
        """fn in torch, its outputs as numpy (an input returned as such stays that array)."""
        flat, rebuild = _flat(self.fn(*inputs))
        by_id = {id(t): a for t, a in zip(inputs, arrays)}
        return rebuild([None if t is None else by_id.get(id(t)) if id(t) in by_id else t.numpy()
                        for t in flat])

    def _trace(self, arrays, inputs) -> Any:
        recorder = _Recorder(dict(zip(self.names, inputs)))
        with recorder:
            out = self.fn(*inputs)
        flat, rebuild = _flat(out)
        if not all(t is None or isinstance(t, Tensor) for t in flat):
            raise Untraceable("the result is not tensors")
        results = []
        for t in flat:
            if t is None:
                results.append("None")
            elif id(t) in recorder.vars:
                results.append(recorder.vars[id(t)])
            else:  # independent of the inputs
                results.append(recorder._const(t))
        body = "\n".join(f"        {line}" for line in _live(recorder.lines, results))
        source = (f"def _traced({', '.join(self.names)}):\n"
                  f"    with _errstate(all='ignore'):\n{body or '        pass'}\n"
                  f"    return ({''.join(r + ', ' for r in results)})\n")
        namespace = {**_NAMESPACE, **recorder.consts, "_errstate": np.errstate}
        exec(compile(source, "<traced>", "exec"), namespace)
        path = namespace["_traced"]
        self._check(path, arrays, flat)
        self.paths.append(lambda *a: rebuild(list(path(*a))))
        by_id = {id(t): a for t, a in zip(inputs, arrays)}
        return rebuild([None if t is None else by_id.get(id(t)) if id(t) in by_id else t.numpy()
                        for t in flat])

    @staticmethod
    def _check(path: Callable[..., Any], arrays, flat: list[Tensor | None]) -> None:
        """The compiled path runs and gives results of torch's shapes."""
        got = path(*arrays)
        for g, t in zip(got, flat):
            if (g is None) != (t is None) or (t is not None and np.shape(g) != tuple(t.shape)):
                raise Untraceable("the numpy replay's results differ in shape from torch's")
