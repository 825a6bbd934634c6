"""The server's avatars: each loaded once, checked against the model, registered with the frame loop.

Loading reads the prepared avatar (``engines.avatar``) off the event loop.  The built-in avatar
is prepared on first use, which is the one place the serving path runs ``export``'s torch-free
preparation.  An avatar prepared for another model is refused with the command that fixes it.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Protocol

import numpy as np

from engines.avatar import Avatar, AvatarError, default_avatars_dir, load_avatar

__all__ = ["AvatarRegistry", "AVATAR_NAME", "load_for_model"]

AVATAR_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class _Loop(Protocol):
    def add_avatar(self, avatar: Avatar) -> np.ndarray: ...
    def drop_avatar(self, name: str) -> None: ...


def load_for_model(name: str, avatars_dir: Path | None, features_version: int,
                   model_dir: Path | None = None) -> Avatar:
    """Load an avatar by name or path (the built-in one prepared on first use, for ``model_dir``'s
    model when it has avatar features of its own), checked for the model."""
    directory = Path(avatars_dir or default_avatars_dir())
    if name == "default":
        from export.avatar import ensure_default_avatar  # torch-free preparation, first use only

        avatar = ensure_default_avatar(directory, model_dir)
    else:
        avatar = load_avatar(name, directory)
    if avatar.features_version != features_version:
        raise AvatarError(
            f"avatar {name!r} was prepared for renderer features v{avatar.features_version}, the model "
            f"needs v{features_version}: run `lipstream prepare SOURCE --name {name}"
            f"{'' if model_dir is None else f' --model {model_dir}'}` again")
    return avatar


class AvatarRegistry:
    def __init__(self, loop: _Loop, features_version: int, avatars_dir: Path | None = None, *,
                 keep: str = "default", max_loaded: int = 8, model_dir: Path | None = None) -> None:
        self.loop = loop
        self.model_dir = model_dir
        self.features_version = features_version
        self.avatars_dir = avatars_dir
        self.keep = keep  # the server's default avatar: never evicted
        self.max_loaded = max_loaded  # avatars kept loaded beyond those in use (LRU)
        self._loaded: dict[str, tuple[Avatar, np.ndarray]] = {}  # in use order, oldest first
        self._lock = asyncio.Lock()

    async def get(self, name: str) -> tuple[Avatar, np.ndarray]:
        """The avatar and its engine rows; AvatarError if there is none by that name."""
        if name in self._loaded:
            self._loaded[name] = self._loaded.pop(name)  # most recently used
            return self._loaded[name]
        if not AVATAR_NAME.match(name):
            raise AvatarError(f"invalid avatar name {name!r}")
        async with self._lock:
            if name not in self._loaded:
                avatar = await asyncio.get_running_loop().run_in_executor(
                    None, load_for_model, name, self.avatars_dir, self.features_version, self.model_dir)
                self._loaded[name] = (avatar, self.loop.add_avatar(avatar))
                self._evict(but=name)
        return self._loaded[name]

    def _evict(self, but: str) -> None:
        """Past ``max_loaded``, forget the least recently used avatars no session uses, so the
        engine's feature tables and the renderers do not grow as avatars come and go."""
        for name in list(self._loaded):
            if len(self._loaded) <= self.max_loaded:
                return
            if name in (but, self.keep):
                continue
            try:
                self.loop.drop_avatar(name)
            except RuntimeError:  # a session still shows it
                continue
            del self._loaded[name]

    def unload(self, name: str) -> None:
        """Forget a loaded avatar (its files are about to go): RuntimeError while a session shows it."""
        if name in self._loaded:
            self.loop.drop_avatar(name)
            del self._loaded[name]

    def __len__(self) -> int:
        return len(self._loaded)

    def names_on_disk(self, default: str) -> list[str]:
        """Prepared avatars by name (directories with a manifest), for the browser client's list."""
        root = Path(self.avatars_dir or default_avatars_dir())
        names = {default, "default"}
        if root.is_dir():
            names.update(d.name for d in root.iterdir()  # dot-dirs are avatars being written
                         if AVATAR_NAME.match(d.name) and not d.name.startswith(".")
                         and (d / "manifest.json").is_file())
        return sorted(names)
