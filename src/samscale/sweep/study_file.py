"""One study per work directory: the study a sweep saves beside its store (`study.yaml`) is never replaced by
another study's, so a report always describes the runs it was built for.

A work directory whose study.yaml names another study is refused with a message that says which study is there and
how to give the new one its own folder. The file is written atomically (`samscale.fileio`), and created race-free: of
two sweeps of different studies starting at once in one folder, one saves its study and the other is refused.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from samscale.errors import ConfigError
from samscale.fileio import create_new, write_text
from samscale.spec.study import Study
from samscale.store import RunStore
from samscale.workdir import store_path, study_path


def saved_study_name(workdir: str | Path) -> str | None:
    """The `name:` of the study saved in `workdir`, or None when there is none or it cannot be read."""
    try:
        data = yaml.safe_load(study_path(workdir).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def save_study(study: Study, workdir: str | Path) -> None:
    """Save `study` as the work directory's study.yaml, refusing a folder that holds another study.

    A study.yaml that cannot be read (left by a crash of an older version, or edited by hand) is replaced only when
    the store holds no runs of another study.
    """
    workdir = Path(workdir)
    text = study.to_yaml()
    if create_new(study_path(workdir), text):
        return
    saved = saved_study_name(workdir)
    if saved is None and store_path(workdir).is_file():
        others = sorted(set(RunStore(store_path(workdir)).studies()) - {study.name})
        if others:
            raise ConfigError(f"{study_path(workdir)} cannot be read and the store there holds runs of "
                              f"{', '.join(map(repr, others))}; sweep study {study.name!r} into another folder "
                              "(--out DIR)")
    elif saved is not None and saved != study.name:
        raise ConfigError(f"{workdir} holds study {saved!r} (its study.yaml); study {study.name!r} needs its own "
                          f"work directory: pass --out DIR (by default each study gets runs/NAME)")
    write_text(study_path(workdir), text)
