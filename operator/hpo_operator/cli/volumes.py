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
        for m in sorted(self.mounts, key=lambda m: len(m.mount_path), reverse=True):
            if value == m.mount_path or value.startswith(m.mount_path.rstrip("/") + "/"):
                return str(m.local) + value[len(m.mount_path.rstrip("/")) :]
        return value

    def check(self, values: Mapping[str, str]) -> None:
        """Refuse a value (``field → value``) that points into a volume that does not exist here."""
        for where, value in values.items():
            for mount_path, why in self.missing.items():
                if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                    raise VolumeError(
                        f"{where}: {value!r} is on {why}, which hpo run cannot provide (it provides "
                        f"{SUPPORTED}); run this study on a cluster, or point the path at a local file"
                    )


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
            why = _fill(volume, config_maps, directory)
            if why is not None:
                missing[mount_path] = f"spec.template.volumes[{i}] ({name}: {why})"
                continue
            made.add(name)
        local = directory / str(vm["subPath"]) if vm.get("subPath") else directory
        mounts.append(Mount(mount_path, local, field))
    return LocalVolumes(tuple(mounts), missing)


def _fill(
    volume: Mapping[str, Any], config_maps: Mapping[str, Mapping[str, Any]], directory: Path
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
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        for item in items:
            key = str(item.get("key"))
            if key not in data:
                return f"ConfigMap {cm_name!r} has no key {key!r}"
            target = directory / str(item.get("path", key))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[key], encoding="utf-8")
        return None
    kind = next((k for k in volume if k != "name"), "unknown")
    return f"a {kind} volume"
