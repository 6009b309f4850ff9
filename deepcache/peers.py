"""Other caches on the same U-Net. Users migrating from a peer extension often still have it installed, and Forge
Neo ships its own (Spectrum); two caches on one U-Net give a wrong image, so when another one is on, ours stands
down for that run and says which extension to disable."""
from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from torch import nn


def peer_extensions(script_paths: Iterable[str], own_root: Path) -> list[str]:
    """Other installed extensions that ship a DeepCache script (their folder or script file says so), from the
    paths of every loaded script. Both known peers title their script "DeepCache", like this one."""
    peers = set()
    for path in map(Path, script_paths):
        name = _extension_name(path)
        inside_own = own_root == path or own_root in path.resolve().parents
        if not inside_own and "deepcache" in f"{name}/{path.name}".lower():
            peers.add(name)
    return sorted(peers)


def peer_hook(unet: nn.Module) -> str | None:
    """The extension whose DeepCache forward replaces ``unet.forward`` (aria1th/sd-webui-deepcache-standalone
    during its generations, LoganBooker/sd-deepcache from its first use on), or None. This extension never
    replaces the U-Net's forward, so any such forward is someone else's."""
    forward = unet.__dict__.get("forward")
    if forward is None:
        return None
    name, text = origin(forward)
    return name if "deepcache" in text.lower() else None


CACHE_NAME = re.compile(r"cache|spectrum|forecast", re.IGNORECASE)  # TeaCache, EasyCache, MagCache, FBCache, ...


def callables_reached(start: Any, depth: int = 4) -> Iterator[Callable]:
    """``start`` and the callables it holds (closure cells, ``functools.partial``, bound methods, ``__wrapped__``,
    our ``deepcache_previous``), breadth first: what a U-Net function wrapper may call."""
    seen, level = set(), [start]
    for _ in range(depth):
        following = []
        for item in level:
            if not callable(item) or id(item) in seen:
                continue
            seen.add(id(item))
            yield item
            function = getattr(item, "__func__", item)
            if isinstance(item, functools.partial):
                following += [item.func, *item.args, *item.keywords.values()]
            following += [getattr(function, name, None) for name in ("__wrapped__", "deepcache_previous")]
            for cell in getattr(function, "__closure__", None) or ():
                try:
                    following.append(cell.cell_contents)
                except ValueError:  # an empty cell
                    pass
        level = following


def origin(function: Any) -> tuple[str, str]:
    """The extension (or module) a callable comes from, and its code's description (module, name, file)."""
    function = getattr(function, "__func__", function)
    code = getattr(function, "__code__", None)
    text = " ".join(str(part) for part in (getattr(function, "__module__", ""), getattr(function, "__qualname__", ""),
                                            code.co_filename if code else ""))
    name = _extension_name(Path(code.co_filename)) if code else str(getattr(function, "__module__", "?"))
    return name, text


def foreign_cache(wrapper: Any) -> str | None:
    """The extension of another U-Net cache among the callables a wrapper reaches (its code says "cache",
    "spectrum" or "forecast", and is not a DeepCache): it decides which U-Net calls run, so ours must not."""
    for function in callables_reached(wrapper):
        name, text = origin(function)
        if "deepcache" not in text.lower() and CACHE_NAME.search(text):
            return name
    return None


def reaches(wrapper: Any, target: Any) -> bool:
    """Whether ``wrapper`` holds ``target`` (so that it can call it)."""
    return any(function is target for function in callables_reached(wrapper))


def _extension_name(path: Path) -> str:
    """``extensions/<name>/...`` -> ``<name>``; the file's folder when it is not under an extensions folder."""
    parts = path.parts
    for i, part in enumerate(parts[:-1]):
        if part in ("extensions", "extensions-builtin"):
            return parts[i + 1]
    return path.parent.name
