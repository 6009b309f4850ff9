"""Other DeepCache implementations on the same U-Net. Users migrating from a peer extension often still have it
installed; two caches on one U-Net give a wrong image, so when a peer's hook is on the U-Net ours stands down
for that run and says which extension to disable."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

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
    function = getattr(forward, "__func__", forward)
    code = getattr(function, "__code__", None)
    origin = " ".join(str(part) for part in (getattr(function, "__module__", ""), getattr(function, "__qualname__", ""),
                                              code.co_filename if code else ""))
    if forward is None or "deepcache" not in origin.lower():
        return None
    return _extension_name(Path(code.co_filename)) if code else str(getattr(function, "__module__", "?"))


def _extension_name(path: Path) -> str:
    """``extensions/<name>/...`` -> ``<name>``; the file's folder when it is not under an extensions folder."""
    parts = path.parts
    for i, part in enumerate(parts[:-1]):
        if part in ("extensions", "extensions-builtin"):
            return parts[i + 1]
    return path.parent.name
