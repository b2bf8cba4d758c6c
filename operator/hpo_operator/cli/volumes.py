"""The trial pod's volumes, as ``hpo run`` can give them to a local process.

A pod sees its volumes at their ``mountPath``; a local process sees this machine's file system. So
``hpo run`` makes a local directory for each volume it can fill, under ``<work dir>/volumes/<volume>``,
and rewrites the paths under a ``mountPath`` in the trial's command, arguments and ``env`` values to
that directory:

* ``configMap``: a ConfigMap in the same manifest file (the way the examples ship a script) is written
  out, one file per key (or per ``items`` entry, at its ``path``);
* ``emptyDir``: an empty directory, made afresh by each ``hpo run`` (the session's trials share it,
  where each pod would get its own).

Any other volume (a PersistentVolumeClaim, a Secret, a hostPath, a ConfigMap not in the file) does not
exist here: a command, argument or variable that names a path under its ``mountPath`` is refused before
any trial starts, naming the volume; one that no path refers to is only mentioned.
"""

from __future__ import annotations

import posixpath
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo_operator.core.spec import Template

SUPPORTED = "a configMap from the same manifest file, or an emptyDir"


class VolumeError(Exception):
    """A path the trial needs lives on a volume ``hpo run`` cannot provide; names the field."""


@dataclass(frozen=True)
class Mount:
    mount_path: str  # where the pod would see it (a directory, or a file with subPath)
    local: Path  # where the local process sees it
    field: str  # spec.template.volumeMounts[i]


@dataclass(frozen=True)
class LocalVolumes:
    """The mounts ``hpo run`` provides, and the ones it cannot (``missing``: mountPath → why)."""

    mounts: tuple[Mount, ...]
    missing: Mapping[str, str]

    def rewrite(self, value: str) -> str:
        """``value`` with a leading ``mountPath`` (the longest that matches) replaced by its local path."""
        m = self._mount_of(value)
        if isinstance(m, Mount):
            return str(m.local) + value[len(m.mount_path.rstrip("/")) :]
        return value

    def rewrite_all(self, value: Any) -> Any:
        """:meth:`rewrite` on every string inside JSON-like data (a recipe's file paths)."""
        if isinstance(value, str):
            return self.rewrite(value)
        if isinstance(value, Mapping):
            return {k: self.rewrite_all(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.rewrite_all(v) for v in value]
        return value

    def check(self, values: Mapping[str, str]) -> None:
        """Refuse a value (``field → value``) whose path lies on a volume that does not exist here (the
        longest ``mountPath`` that holds it decides, as in the container)."""
        for where, value in values.items():
            m = self._mount_of(value)
            if isinstance(m, str):
                raise VolumeError(
                    f"{where}: {value!r} is on {self.missing[m]}, which hpo run cannot provide (it provides "
                    f"{SUPPORTED}); run this study on a cluster, or point the path at a local file"
                )

    def _mount_of(self, value: str) -> Mount | str | None:
        """The provided mount (a :class:`Mount`) or missing one (its ``mountPath``) that holds ``value``."""
        found: list[tuple[str, Mount | str]] = [(m.mount_path, m) for m in self.mounts]
        found += [(path, path) for path in self.missing]
        for path, where in sorted(found, key=lambda f: len(f[0]), reverse=True):
            if value == path or value.startswith(path.rstrip("/") + "/"):
                return where
        return None


def strings(value: Any, path: str) -> dict[str, str]:
    """Every string inside JSON-like data, by its field path (``spec.trainer.train.files[0]``)."""
    if isinstance(value, str):
        return {path: value}
    out: dict[str, str] = {}
    if isinstance(value, Mapping):
        for k, v in value.items():
            out |= strings(v, f"{path}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            out |= strings(v, f"{path}[{i}]")
    return out


def prepare(template: Template, config_maps: Mapping[str, Mapping[str, Any]], root: Path) -> LocalVolumes:
    """Fill ``root/<volume>`` for each volume of the template that ``hpo run`` can provide."""
    volumes = {str(v.get("name")): (i, v) for i, v in enumerate(template.volumes)}
    mounts: list[Mount] = []
    missing: dict[str, str] = {}
    made: set[str] = set()
    for j, vm in enumerate(template.volume_mounts):
        field = f"spec.template.volumeMounts[{j}]"
        name = str(vm.get("name"))
        mount_path = posixpath.normpath(str(vm.get("mountPath")))
        found = volumes.get(name)
        if found is None:
            missing[mount_path] = f"{field} (no volume named {name!r} in spec.template.volumes)"
            continue
        i, volume = found
        directory = root / name
        if name not in made:
            why = _fill(volume, config_maps, directory, f"spec.template.volumes[{i}]")
            if why is not None:
                missing[mount_path] = f"spec.template.volumes[{i}] ({name}: {why})"
                continue
            made.add(name)
        sub = vm.get("subPath")
        local = directory / _relative(str(sub), f"{field}.subPath") if sub else directory
        mounts.append(Mount(mount_path, local, field))
    return LocalVolumes(tuple(mounts), missing)


def _relative(path: str, field: str) -> str:
    """A path inside a volume, as Kubernetes allows it: relative, without ``..``."""
    if posixpath.isabs(path) or ".." in path.split("/"):
        raise VolumeError(f"{field}: {path!r} must be a relative path without '..'")
    return path


def _fill(
    volume: Mapping[str, Any], config_maps: Mapping[str, Mapping[str, Any]], directory: Path, field: str
) -> str | None:
    """Write one volume's content into ``directory``; the reason it cannot, or None."""
    if "emptyDir" in volume:
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        return None
    source = volume.get("configMap")
    if isinstance(source, Mapping):
        cm_name = str(source.get("name"))
        cm = config_maps.get(cm_name)
        if cm is None:
            return f"ConfigMap {cm_name!r} is not in the manifest file"
        data: dict[str, str] = {str(k): str(v) for k, v in (cm.get("data") or {}).items()}
        items: Sequence[Mapping[str, Any]] = source.get("items") or [{"key": k, "path": k} for k in data]
        default_mode = int(source.get("defaultMode", 0o644))
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        for j, item in enumerate(items):
            key = str(item.get("key"))
            if key not in data:
                return f"ConfigMap {cm_name!r} has no key {key!r}"
            target = directory / _relative(str(item.get("path", key)), f"{field}.configMap.items[{j}].path")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[key], encoding="utf-8")
            target.chmod(int(item.get("mode", default_mode)) & 0o777)  # a script may need its x bit
        return None
    kind = next((k for k in volume if k != "name"), "unknown")
    return f"a {kind} volume"
