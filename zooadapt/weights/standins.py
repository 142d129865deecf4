"""Reading a pickle that names classes zooadapt does not allow, without running any of them.

Training frameworks pickle their own objects beside the weights: a history buffer, a config
object, a dataclass of hyper-parameters, the whole ``nn.Module``. ``torch.load(weights_only=True)``
refuses such a file, and ``weights_only=False`` imports the framework and runs whatever the file
names. Here the file is read by torch's own weights-only unpickler, with every class it names
beyond torch's allow-list registered under that name as an inert ``StandIn``: creating one,
calling one or giving one its state only records the arguments. Nothing the file names is
imported or called, so the framework need not be installed, and a class with a hostile
``__setstate__`` or ``__reduce__`` has nothing to run. The tensors are then taken from the
containers and from the stand-ins' recorded state: a pickled ``nn.Module`` gives the keys its
``state_dict()`` would (``_parameters``, persistent ``_buffers``, ``_modules`` by dotted name),
and a TorchScript archive (``torch.jit.save``) gives its module's, read from ``data.pkl``
without compiling its code.

A file that names a callable whose only use in a pickle is to run code (``os.system``,
``builtins.eval``, ``subprocess.Popen``, ``builtins.getattr``…) is not a training checkpoint:
it is refused with ``UnsafeCheckpointError`` naming the callable, before anything is unpickled.
(The stand-ins would not run it either; the refusal says what the file is.)

Stand-ins are registered through ``torch.serialization.safe_globals``, which is process-wide:
reads that need them take one lock, so two of them never see each other's registrations, and a
plain ``weights_only`` read in another thread that meets them is told to ``settle`` its result.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import pickletools
import re
import threading
import types
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from ..contract.errors import CheckpointBoundsError, CheckpointFormatError, UnsafeCheckpointError
from .weight_sets import allowed_metadata, metadata_names

__all__ = ["StandIn", "StandInRead", "read_with_standins", "is_torchscript", "hostile_names", "plain", "registrations",
           "overlapped", "settle"]

_HOSTILE_MODULES = frozenset({
    "os", "posix", "nt", "sys", "subprocess", "commands", "popen2", "_posixsubprocess", "pty", "shutil", "socket",
    "importlib", "runpy", "ctypes", "code", "codeop", "marshal", "pickle", "_pickle", "webbrowser", "signal",
    "multiprocessing", "asyncio", "threading", "_thread", "timeit", "cProfile", "profile", "pdb", "bdb", "trace",
    "doctest",
})
"""Modules a training checkpoint has no reason to name: any of their globals means the file
wants to run commands, load code or touch the process."""
_HOSTILE_NAMES = frozenset({
    "builtins.eval", "builtins.exec", "builtins.compile", "builtins.__import__", "builtins.open",
    "builtins.breakpoint", "builtins.input", "builtins.getattr", "builtins.setattr", "builtins.delattr",
    "builtins.globals", "builtins.locals", "builtins.vars", "builtins.exit", "builtins.quit", "builtins.help",
    "builtins.__build_class__", "types.FunctionType", "types.LambdaType", "types.CodeType", "types.MethodType",
    "operator.attrgetter", "operator.methodcaller", "numpy.testing._private.utils.runstring", "numpy.load",
    "torch.load", "torch.serialization.load", "torch.hub.load", "torch.jit.load",
})
"""Callables whose only use in a pickle is to evaluate, import, open or reach into objects."""

_MAX_SHOWN = 6


def hostile_names(names: Iterable[str]) -> list[str]:
    """The names among ``names`` that only a file meant to run code would call, sorted."""
    return sorted({n for n in names if n in _HOSTILE_NAMES or n.split(".", 1)[0] in _HOSTILE_MODULES})


# -- the stand-ins ----------------------------------------------------------------------------


class StandIn:
    """An object of a class the file names, made without running that class.

    Creating one (``NEWOBJ``), calling one (``REDUCE``: a class or a function of the file's
    choosing), giving it its state (``BUILD``), items (a dict subclass) or elements (a list
    subclass) only records them. No ``__getattr__``, no operators: code that receives a stand-in
    where it expected the real object fails instead of being steered.
    """

    __slots__ = ("args", "state", "dict_items", "list_items")
    args: tuple[Any, ...]
    state: Any
    dict_items: dict[Any, Any]
    list_items: list[Any]
    standin_name: ClassVar[str] = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        self = object.__new__(cls)
        self.args, self.state = args + ((kwargs,) if kwargs else ()), None
        self.dict_items = {}
        self.list_items = []
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Nothing: ``__new__`` kept the arguments (a ``REDUCE`` calls the class with them)."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.dict_items[key] = value

    def append(self, item: Any) -> None:
        self.list_items.append(item)

    def extend(self, items: Iterable[Any]) -> None:
        self.list_items.extend(items)

    def __repr__(self) -> str:
        return f"<stand-in for {self.standin_name}>"


def _standin_class(name: str) -> type[StandIn]:
    """A fresh class per name and per read: torch's unpickler finds a global by identity."""
    module, _, qualname = name.rpartition(".")
    return type(qualname or name, (StandIn,), {"__slots__": (), "standin_name": name, "__module__": module or "?",
                                               "__qualname__": qualname or name})


def _first_argument(*args: Any) -> Any:
    """TorchScript's list-type tags (``torch.jit._pickle.build_intlist``…): the value itself."""
    return args[0] if args else None


_TRANSPARENT = ("torch.jit._pickle.build_intlist", "torch.jit._pickle.build_tensorlist",
                "torch.jit._pickle.build_doublelist", "torch.jit._pickle.build_boollist",
                "torch.jit._pickle.restore_type_tag")


def _new_object(cls: Any = None, *args: Any) -> StandIn:
    """``copyreg._reconstructor`` / ``__newobj__`` / ``__newobj_ex__``: an instance of a stand-in class,
    made as the class would make it without running it (anything else: an inert stand-in)."""
    if isinstance(cls, type) and issubclass(cls, StandIn):
        return cls.__new__(cls)
    return _Generic(cls, *args)


class _Generic(StandIn):
    __slots__ = ()
    standin_name = "copyreg"


_CONSTRUCTORS = ("copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__")


# -- what the file names ----------------------------------------------------------------------


def is_torchscript(path: Path) -> bool:
    """A ``torch.jit.save`` archive: a torch zip with ``constants.pkl`` beside ``data.pkl``, asked
    the way ``torch.load`` asks (its zip reader: 0.2 ms where Python's zipfile takes 1.5)."""
    try:
        import torch

        reader = torch._C.PyTorchFileReader(str(path))
        return bool(reader.has_record("constants.pkl"))  # type: ignore[attr-defined]  # torch's stub lacks it
    except Exception:  # not a torch zip, or a torch without that reader: Python's zipfile decides
        pass
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    prefix = _archive_prefix(names)
    return prefix is not None and f"{prefix}/constants.pkl" in names


def _archive_prefix(names: list[str]) -> str | None:
    """torch names a zip's records ``<archive>/…`` after its first record's folder."""
    return names[0].split("/", 1)[0] if names and "/" in names[0] else None


def _global_name(module: str, name: str) -> tuple[str, str]:
    """The name torch's unpickler looks a global up by (Python 2 names mapped as torch maps them),
    and the one Python's would import (``commands.Popen`` is ``subprocess.Popen``: Python's pickler
    writes it so for protocols below 3): the first is registered, the second judged and shown."""
    import _compat_pickle

    from torch._utils import IMPORT_MAPPING, NAME_MAPPING

    names = []
    for names_map, modules_map in ((NAME_MAPPING, IMPORT_MAPPING),
                                   (_compat_pickle.NAME_MAPPING, _compat_pickle.IMPORT_MAPPING)):
        if (module, name) in names_map:
            names.append(".".join(names_map[(module, name)]))
        else:
            names.append(f"{modules_map.get(module, module)}.{name}")
    return names[0], names[1]


_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
                         "BINSTRING", "STRING"})


MAX_PICKLE_OPCODES = 10_000_000
"""The most opcodes the scan of a file's pickles reads. Measured: a seeded torchvision ResNet-152
state dict pickles to 31,570 opcodes, a training dict of it (model, EMA copy, AdamW state) to
103,355: the bound is ~100 times that, and a crafted pickle of millions of opcodes (a legacy file
holds no compression to bound it by size) is refused after a few seconds instead of minutes."""


def _pickle_globals(fh: Any, names: dict[str, str], budget: list[int] | None = None) -> None:
    """Add the globals one pickle names, in order (read with ``pickletools``: parsed, never executed).

    ``GLOBAL`` (protocols 0-3, torch.save's) names its global exactly; ``STACK_GLOBAL`` takes
    the two strings pushed before it, which is how Python writes it (torch's unpickler reads no
    protocol-4 pickle anyway: this only lets the refusal name what such a file calls).
    """
    pushed: list[Any] = []
    memo: dict[Any, Any] = {}
    budget = [MAX_PICKLE_OPCODES] if budget is None else budget
    for op, arg, _ in pickletools.genops(fh):
        budget[0] -= 1
        if budget[0] < 0:
            raise CheckpointBoundsError(
                f"its pickle runs past {MAX_PICKLE_OPCODES:,} opcodes (a training checkpoint of a ResNet-152 holds "
                "~100,000); it was not read further. If it is your own file, extract the tensors with torch.load "
                "and save them with safetensors.")
        kind = op.name
        if kind == "GLOBAL":
            module, _, name = str(arg).partition(" ")
            names.setdefault(*_global_name(module, name))
        elif kind == "STACK_GLOBAL":
            if len(pushed) >= 2 and isinstance(pushed[-2], str) and isinstance(pushed[-1], str):
                names.setdefault(*_global_name(pushed[-2], pushed[-1]))
        elif kind in _STRING_OPS:
            pushed.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
        elif kind in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif kind == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif kind in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(arg))
        elif op.stack_after:
            pushed.append(None)


def _needed_globals(path: Path) -> dict[str, str]:
    """Every global the file's pickles name, in order: ``{name torch looks up: name Python would
    import}``; ``CheckpointFormatError`` when they do not parse."""
    names: dict[str, str] = {}
    budget = [MAX_PICKLE_OPCODES]  # for all of the file's pickles together
    try:
        if zipfile.is_zipfile(path):
            import torch

            # torch's own zip reader, so this is the data.pkl torch.load unpickles
            _pickle_globals(io.BytesIO(torch._C.PyTorchFileReader(str(path)).get_record("data.pkl")), names,
                            budget)
            return names
        with open(path, "rb") as fh:
            # torch.save's legacy format: four pickles (magic number, protocol, system info, the
            # object), then the storages; a plain pickle file is one
            for _ in range(4):
                if not fh.read(1):
                    break
                fh.seek(-1, io.SEEK_CUR)
                _pickle_globals(fh, names, budget)
    except (KeyboardInterrupt, SystemExit):
        raise
    except CheckpointBoundsError as exc:
        raise CheckpointBoundsError(f"{path}: {exc}") from None
    except Exception as exc:  # a truncated or garbled pickle fails in many ways (ValueError, KeyError, EOF…)
        raise CheckpointFormatError(
            f"{path} is not a readable checkpoint (its pickle does not parse: {type(exc).__name__}); it may be "
            "truncated or corrupt. Download or copy it again.") from exc
    return names


def _known_names() -> set[str]:
    """Globals torch's unpickler already knows (its allow-list, and the user's own additions)."""
    import torch
    from torch import _weights_only_unpickler as wou

    known = set(wou._get_allowed_globals()) if hasattr(wou, "_get_allowed_globals") else set()
    for entry in torch.serialization.get_safe_globals():
        known.add(entry[1] if isinstance(entry, tuple) else f"{entry.__module__}.{entry.__qualname__}")
    return known | metadata_names()


# -- reading --------------------------------------------------------------------------------


class StandInRead(NamedTuple):
    """What was read: the file's object with stand-ins turned into plain containers, and the
    names of the classes (and functions) replaced by stand-ins, the file's own first."""

    obj: Any
    standins: tuple[str, ...]


_LOCK = threading.Lock()
_generation = 0
"""Bumped as a read registers its stand-ins and again as it removes them: odd while one is
registered. The registrations are process-wide, so a plain ``weights_only`` load in another
thread may meet them; ``overlapped`` tells it to ``settle`` what it read."""


def registrations() -> int:
    """A mark to give ``overlapped`` after a ``torch.load(weights_only=True)``."""
    return _generation


def overlapped(before: int) -> bool:
    """Whether stand-ins were registered at any moment since ``registrations()`` gave ``before``."""
    return before % 2 == 1 or _generation != before


def settle(obj: Any) -> StandInRead:
    """An object read while another read's stand-ins were registered: plain values, and the names
    of the stand-ins it holds."""
    names: dict[str, None] = {}
    return StandInRead(_plain(obj, {}, names), tuple(names))


def _unpickler_class() -> type:
    from torch import _weights_only_unpickler as wou

    class _Unpickler(wou.Unpickler):
        """torch's weights-only unpickler, letting a stand-in take a dict's or a list's items (a
        pickled dict or list subclass); every other check is torch's own."""

        def _check_set_item_target(self, opcode: str) -> None:
            if not isinstance(self.stack[-1], StandIn):
                super()._check_set_item_target(opcode)

        def _check_append_target(self, list_obj: Any) -> None:
            if not isinstance(list_obj, StandIn):
                super()._check_append_target(list_obj)

    return _Unpickler


def _pickle_module() -> types.ModuleType:
    """What ``torch.load(pickle_module=…)`` needs: the restricted ``Unpickler`` and ``load``."""
    module = types.ModuleType("zooadapt_standin_pickle")
    unpickler = _unpickler_class()
    module.Unpickler = unpickler  # type: ignore[attr-defined]
    module.load = lambda fh, **kwargs: unpickler(fh, **kwargs).load()  # type: ignore[attr-defined]
    return module


@contextlib.contextmanager
def _registered(classes: dict[str, type[StandIn]]) -> Iterator[None]:
    import torch

    entries: list[Any] = [(cls, name) for name, cls in classes.items()]
    entries += [(_first_argument, name) for name in _TRANSPARENT]
    entries += [(_new_object, name) for name in _CONSTRUCTORS]
    global _generation
    _generation += 1  # under _LOCK, held by the caller
    try:
        with allowed_metadata(), torch.serialization.safe_globals(entries):
            yield
    finally:
        _generation += 1


def read_with_standins(path: str | Path, *, map_location: str = "cpu", mmap: bool = False) -> StandInRead:
    """Read a torch checkpoint (``torch.save``'s zip or legacy format, or ``torch.jit.save``'s
    archive) with every class it names beyond torch's allow-list replaced by an inert stand-in.

    Raises ``UnsafeCheckpointError`` naming the callables of a file meant to run code, or naming
    the replaced classes when the stand-ins could not give up the tensors (``trusted=True`` is
    then the way, for a file one trusts, with its packages installed); ``CheckpointFormatError``
    for a file that does not parse.
    """
    import torch

    path = Path(path)
    script = is_torchscript(path)
    names = _needed_globals(path)
    hostile = sorted({shown for name, shown in names.items() if hostile_names((name, shown))})
    if hostile:
        raise UnsafeCheckpointError(
            f"{path} would call {_listed(hostile)} while being unpickled: a file that runs commands, evaluates "
            "code, imports modules or reaches into objects is not a training checkpoint. zooadapt refused it and "
            "ran nothing. Do not pass trusted=True for it (that would run the call) unless you wrote the file "
            "yourself and know what it does.")
    with _LOCK:  # what is known is asked with no other read's stand-ins registered
        known = _known_names()
        wanted = [n for n in names if n not in known and n not in _TRANSPARENT and n not in _CONSTRUCTORS]
        # the file's own classes first (the top-level object's comes first in a pickle), torch's last
        ordered = tuple(sorted(wanted, key=lambda n: n.startswith(("torch.", "__torch__.torch."))))
        classes = {name: _standin_class(name) for name in ordered}
        try:
            with _registered(classes):
                if script:
                    obj = _read_script_data(path, map_location)
                else:
                    obj = torch.load(path, map_location=map_location, pickle_module=_pickle_module(),
                                     weights_only=False, mmap=mmap)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # torch's unpickler refused an opcode, a stand-in landed where a tensor goes…
            raise UnsafeCheckpointError(_unreadable(path, ordered, script, exc)) from exc
    try:
        obj = _script_state_dict(obj, _script_layout(path)) if script else plain(obj)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a module nesting too deep or repeating too often…
        raise UnsafeCheckpointError(_unreadable(path, ordered, script, exc)) from exc
    # TorchScript names each specialisation of a class apart (``___torch_mangle_12.Conv2d``): one name each
    return StandInRead(obj, tuple(dict.fromkeys(_MANGLE.sub("", name) for name in ordered)))


def _read_script_data(path: Path, map_location: str) -> Any:
    """A TorchScript archive's ``data.pkl`` (its module objects and their tensors) through torch's
    own zip reader and storage loading; its ``code/`` is never compiled."""
    import torch

    with open(path, "rb") as fh, torch.serialization._open_zipfile_reader(fh) as archive:
        return torch.serialization._load(archive, map_location, _pickle_module(), pickle_file="data.pkl",
                                         weights_only=True)


def _unreadable(path: Path, standins: tuple[str, ...], script: bool, exc: BaseException) -> str:
    reason = _reason(exc)
    if isinstance(exc, pickle.UnpicklingError) and "Unsupported operand" in str(exc):
        return (f"{path} uses pickle opcodes beyond protocol 2 (saved with torch.save(..., pickle_protocol=N) or "
                f"pickle.dump), which zooadapt's code-free reader does not read ({reason}). If you trust the file, "
                "trusted=True reads it by running its code; better, load it once there and save "
                "model.state_dict() with safetensors.")
    if isinstance(exc, pickle.UnpicklingError) and "persistent_load" in str(exc):
        reason = ("it holds a whole nn.Module in torch's legacy format (torch.save before 1.6, or "
                  "_use_new_zipfile_serialization=False), whose module references the code-free reader does not follow")
    what = "TorchScript archive" if script else "checkpoint"
    if not standins:
        return (f"{path} is a {what} zooadapt could not read without running its code ({reason}). If you trust "
                "the file, trusted=True reads it by running its code.")
    packages = sorted({n.split(".", 1)[0] for n in standins} - {"torch", "__torch__", "builtins", "collections"})
    have = f" and have {', '.join(packages)} installed" if packages else ""
    return (f"{path} names {len(standins)} classes zooadapt does not allow ({_listed(standins)}); it read the file "
            f"without running them, through inert stand-ins, but could not recover the tensors that way ({reason}). "
            f"If you trust the file{have}, trusted=True runs its code to read it; or load it once where that works "
            "and save model.state_dict() with safetensors.")


_MANGLE = re.compile(r"___torch_mangle_\d+\.")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _reason(exc: BaseException) -> str:
    """``Type: first line``, without the terminal colour codes torch puts in its messages, short."""
    text = _ANSI.sub("", str(exc)).strip().splitlines()
    line = text[0] if text else ""
    line = line if len(line) <= 160 else line[:157] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _listed(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:_MAX_SHOWN])
    return shown + (f" and {len(names) - _MAX_SHOWN} more" if len(names) > _MAX_SHOWN else "")


# -- from stand-ins to tensors ----------------------------------------------------------------


def _is_module(obj: Any) -> bool:
    return _is_module_state(obj.state)


def _is_module_state(state: Any) -> bool:
    """Whether ``state`` is an ``nn.Module``'s ``__dict__`` (its parameters, buffers and children)."""
    return isinstance(state, dict) and "_parameters" in state and "_modules" in state


def _pairs(container: Any) -> list[tuple[Any, Any]]:
    if isinstance(container, dict):
        return list(container.items())
    if isinstance(container, StandIn):  # an OrderedDict subclass of the file's: its items
        return list(container.dict_items.items())
    return []


def module_state_dict(obj: StandIn) -> OrderedDict[str, Any]:
    """A pickled ``nn.Module``'s ``state_dict()``, from its recorded ``__dict__``: parameters, then
    persistent buffers (``_non_persistent_buffers_set`` is in the state), then each child's under
    ``name.``; a module that customises ``_save_to_state_dict`` is not consulted (nothing runs)."""
    return _state_dict_of(obj.state, id(obj))


def _state_dict_of(state: dict[str, Any], ident: int) -> OrderedDict[str, Any]:
    import torch

    out: OrderedDict[str, Any] = OrderedDict()
    _module_into(state, ident, "", out, set(), [_MAX_VISITS], torch.Tensor)
    return out


_MAX_VISITS = 1_000_000
"""Modules visited at most while naming a state dict: a module shared under two names is named
under both (as ``state_dict()`` does), so a crafted chain of shared modules could otherwise ask
for 2**60 keys."""


def _visit(budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise CheckpointFormatError(f"the pickled modules nest or repeat more than {_MAX_VISITS:,} times")


def _module_into(state: dict[str, Any], ident: int, prefix: str, out: dict[str, Any], active: set[int],
                 budget: list[int], tensor: type) -> None:
    if ident in active:  # a module that contains itself: state_dict() would recurse forever
        return
    _visit(budget)
    active.add(ident)
    skip = state.get("_non_persistent_buffers_set")
    skip = skip if isinstance(skip, (set, frozenset)) else set()
    for name, value in _pairs(state.get("_parameters")):
        if isinstance(value, tensor):
            out[f"{prefix}{name}"] = value
    for name, value in _pairs(state.get("_buffers")):
        if isinstance(value, tensor) and name not in skip:
            out[f"{prefix}{name}"] = value
    for name, child in _pairs(state.get("_modules")):
        if isinstance(child, StandIn) and _is_module(child):
            _module_into(child.state, id(child), f"{prefix}{name}.", out, active, budget, tensor)
    active.discard(ident)


def plain(obj: Any) -> Any:
    """``obj`` with every stand-in replaced by plain values: a pickled ``nn.Module`` by its state
    dict, any other object by a dict of its state (and items), a list subclass by a list, a bare
    call (an Enum member, a namedtuple) by its arguments. Containers are rebuilt around them;
    shared and cyclic references stay shared."""
    return _plain(obj, {}, {})


def _plain(obj: Any, memo: dict[int, Any], names: dict[str, None]) -> Any:
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, StandIn):
        names[obj.standin_name] = None
        if _is_module(obj):
            memo[key] = module_state_dict(obj)
            return memo[key]
        fields: dict[Any, Any] = {}
        memo[key] = fields
        state = obj.state
        if isinstance(state, tuple) and len(state) == 2 and all(s is None or isinstance(s, dict) for s in state):
            for part in state:  # (__dict__, __slots__ values)
                fields.update(part or {})
        elif isinstance(state, dict):
            fields.update(state)
        elif state is not None:
            fields["__state__"] = state
        fields.update(obj.dict_items)
        if obj.list_items and not fields:
            memo[key] = listed = [_plain(v, memo, names) for v in obj.list_items]
            return listed
        if obj.list_items:
            fields["__items__"] = obj.list_items
        if not fields and obj.args and _is_module_state(obj.args[0]):
            # a module pickled as a call on its __dict__ (torch.fx's reduce_graph_module(body,
            # import_block), which re-generates the GraphModule's code): its state dict, from that __dict__
            memo[key] = _state_dict_of(obj.args[0], id(obj.args[0]))
            return memo[key]
        if not fields and obj.args:
            memo[key] = tuple(_plain(v, memo, names) for v in obj.args)
            return memo[key]
        for name in list(fields):
            fields[name] = _plain(fields[name], memo, names)
        return fields
    if type(obj) in (dict, OrderedDict):
        out: dict[Any, Any] = type(obj)()
        memo[key] = out
        for name, value in obj.items():
            out[name] = _plain(value, memo, names)
        return out
    if type(obj) is list:
        items: list[Any] = []
        memo[key] = items
        items.extend(_plain(v, memo, names) for v in obj)
        return items
    if type(obj) is tuple:
        memo[key] = tuple(_plain(v, memo, names) for v in obj)
        return memo[key]
    return obj


# -- TorchScript ------------------------------------------------------------------------------

_CLASS = re.compile(r"^class (\w+)\(", re.M)
_LIST = re.compile(r"^  (__parameters__|__buffers__) = \[(.*?)\]", re.M)


def _script_layout(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Each TorchScript module class's parameter and buffer names, read as text from the archive's
    ``code/`` (``__parameters__ = ["weight", ]``): this is what decides its ``state_dict()`` keys."""
    layout: dict[str, tuple[list[str], list[str]]] = {}
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        prefix = _archive_prefix(names)
        start = f"{prefix}/code/"
        for name in names:
            if not (name.startswith(start) and name.endswith(".py")):
                continue
            module = name[len(start):-3].replace("/", ".")
            text = archive.read(name).decode("utf-8", "replace")
            heads = list(_CLASS.finditer(text))
            for i, head in enumerate(heads):
                body = text[head.end():heads[i + 1].start() if i + 1 < len(heads) else len(text)]
                found = {m.group(1): re.findall(r'"([^"]*)"', m.group(2)) for m in _LIST.finditer(body)}
                if "__parameters__" in found:
                    layout[f"{module}.{head.group(1)}"] = (found["__parameters__"], found.get("__buffers__", []))
    return layout


def _script_state_dict(root: Any, layout: dict[str, tuple[list[str], list[str]]]) -> OrderedDict[str, Any]:
    """The scripted module's ``state_dict()``: per module its parameters, then its buffers, then
    its submodules', as ``torch.jit`` orders them."""
    import torch

    out: OrderedDict[str, Any] = OrderedDict()
    budget = [_MAX_VISITS]

    def walk(obj: StandIn, prefix: str, active: set[int]) -> None:
        if id(obj) in active or not isinstance(obj.state, dict):
            return
        _visit(budget)
        active.add(id(obj))
        attrs = obj.state
        params, buffers = layout.get(type(obj).standin_name, (None, None))
        if params is None:  # no code for it: every tensor it holds
            names = [n for n, v in attrs.items() if isinstance(v, torch.Tensor)]
        else:
            names = [*params, *(buffers or [])]
        for name in names:
            value = attrs.get(name)
            if isinstance(value, torch.Tensor):
                out[f"{prefix}{name}"] = value
        for name, value in attrs.items():
            if isinstance(value, StandIn) and value.standin_name in layout:
                walk(value, f"{prefix}{name}.", active)
        active.discard(id(obj))

    if not isinstance(root, StandIn):
        raise CheckpointFormatError("the TorchScript archive's data.pkl holds no module")
    walk(root, "", set())
    return out
